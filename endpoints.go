package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/twinbox-mail/twinbox/config"
	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/transport/tcp"
	"github.com/twinbox-mail/twinbox/wire"
)

// endpoint is one parsed replica argument: a local root, or a way to reach
// a peer's sync server.
type endpoint struct {
	arg  string
	user string // the mail user ("" for ad-hoc local paths)
	loc  maildir.Location
	// A remote replica: dial connects to its server; prefix sends the user
	// name as the first line (remoteprefix:, for `twinbox wrapper`).
	dial   func(ctx context.Context) (io.ReadWriteCloser, error)
	prefix bool
}

func (e endpoint) local() bool { return e.dial == nil }

// parseEndpoint reads a replica argument for user (may be "").
func parseEndpoint(g *globals, s, user string) (endpoint, error) {
	e := endpoint{arg: s, user: user}
	scheme, rest, _ := strings.Cut(s, ":")
	switch scheme {
	case "exec":
		cmd := strings.TrimSpace(rest)
		if cmd == "" {
			return endpoint{}, fmt.Errorf("%q: empty command", s)
		}
		e.dial = func(ctx context.Context) (io.ReadWriteCloser, error) {
			return transport.Command(ctx, []string{"/bin/sh", "-c", cmd})
		}
		return e, nil
	case "remote", "remoteprefix":
		if user == "" {
			return endpoint{}, fmt.Errorf("%s: a remote replica needs the user: -u USER", s)
		}
		login, host, port, err := parseHost(rest)
		if err != nil {
			return endpoint{}, fmt.Errorf("%s: %w", s, err)
		}
		cfg, err := g.config()
		if err != nil {
			return endpoint{}, err
		}
		tmpl := cfg.SSH.Command
		if scheme == "remoteprefix" {
			tmpl = cfg.SSH.PrefixCommand
			e.prefix = true
		}
		argv, err := config.ExpandCommand(tmpl, map[string]string{"login": login, "host": host, "port": port, "user": user})
		if err != nil {
			return endpoint{}, fmt.Errorf("%s: ssh command: %w", s, err)
		}
		e.dial = func(ctx context.Context) (io.ReadWriteCloser, error) {
			g.log.Info("connecting", "peer", s, "command", strings.Join(argv, " "))
			return transport.Command(ctx, argv)
		}
		return e, nil
	}
	if scheme == "tcp" || scheme == "tcps" {
		if user == "" {
			return endpoint{}, fmt.Errorf("%s: a remote replica needs the user: -u USER", s)
		}
		cfg, err := g.config()
		if err != nil {
			return endpoint{}, err
		}
		if cfg.Client.SecretName == "" || cfg.Client.SecretFile == "" {
			return endpoint{}, fmt.Errorf("%s: needs a shared secret: [client] secret_name and secret_file in twinbox.toml (or TWINBOX_CLIENT_SECRET_NAME/_FILE)", s)
		}
		key, err := tcp.ReadKeyFile(cfg.Client.SecretFile)
		if err != nil {
			return endpoint{}, fmt.Errorf("%s: %w", s, err)
		}
		o := tcp.Options{Addr: rest, User: user, SecretName: cfg.Client.SecretName, Secret: key, Timeout: cfg.SSH.ConnectTimeout.Duration}
		if scheme == "tcps" {
			if o.TLS, err = tcp.ClientTLS(cfg.Client.CAFile, cfg.Client.CertFile, cfg.Client.KeyFile); err != nil {
				return endpoint{}, fmt.Errorf("%s: %w", s, err)
			}
		}
		e.dial = func(ctx context.Context) (io.ReadWriteCloser, error) {
			g.log.Info("connecting", "peer", s, "user", user)
			return tcp.Dial(ctx, o)
		}
		return e, nil
	}
	if strings.HasPrefix(s, "ssh://") {
		if user == "" {
			return endpoint{}, fmt.Errorf("%s: a remote replica needs the user: -u USER", s)
		}
		o, err := transport.ParseSSHURL(s)
		if err != nil {
			return endpoint{}, err
		}
		cfg, err := g.config()
		if err != nil {
			return endpoint{}, err
		}
		o.User = user
		o.Command = cfg.SSH.RemoteCommand
		o.IdentityFiles = cfg.SSH.IdentityFiles
		o.KnownHostsFiles = cfg.SSH.KnownHosts
		o.AcceptNewHostKey = cfg.SSH.AcceptNewHostKey
		o.Agent = cfg.SSH.Agent
		o.Timeout = cfg.SSH.ConnectTimeout.Duration
		if f := g.ssh; f != nil {
			if len(f.Identity) > 0 {
				o.IdentityFiles = f.Identity
			}
			if len(f.KnownHosts) > 0 {
				o.KnownHostsFiles = f.KnownHosts
			}
			o.AcceptNewHostKey = o.AcceptNewHostKey || f.AcceptNew
			o.Agent = o.Agent || f.Agent
		}
		o.Stderr = os.Stderr
		e.dial = func(ctx context.Context) (io.ReadWriteCloser, error) {
			g.log.Info("connecting", "peer", s, "user", user)
			return transport.SSH(ctx, o)
		}
		return e, nil
	}
	loc, err := maildir.ParseLocation(s)
	if err != nil {
		return endpoint{}, err
	}
	e.loc = loc
	return e, nil
}

// sshFlags are the built-in SSH client's settings (ssh:// peers); they
// override the [ssh] section of the configuration.
type sshFlags struct {
	Identity   []string `name:"ssh-identity" help:"ssh:// peers: private key to offer (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa); repeatable." placeholder:"FILE" env:"TWINBOX_SSH_IDENTITY"`
	KnownHosts []string `name:"ssh-known-hosts" help:"ssh:// peers: known_hosts file(s) to check the host key against (default ~/.ssh/known_hosts)." placeholder:"FILE" env:"TWINBOX_SSH_KNOWN_HOSTS"`
	AcceptNew  bool     `name:"ssh-accept-new-host-key" help:"ssh:// peers: add an unknown host's key to known_hosts and go on (a changed key still fails)."`
	Agent      bool     `name:"ssh-agent" help:"ssh:// peers: offer the keys of the agent at $SSH_AUTH_SOCK."`
}

// parseHost reads [LOGIN@]HOST[:PORT] (HOST may be [v6]). Nothing in it may
// look like an option to the ssh command.
func parseHost(s string) (login, host, port string, err error) {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		login, s = s[:i], s[i+1:]
		if login == "" || strings.HasPrefix(login, "-") || strings.ContainsAny(login, " \t\n\r\x00'\"\\") {
			return "", "", "", fmt.Errorf("bad login %q", login)
		}
	}
	host = s
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		if host, port, err = net.SplitHostPort(s); err != nil {
			return "", "", "", fmt.Errorf("bad host %q: %v", s, err)
		}
	}
	if host == "" || strings.HasPrefix(host, "-") || strings.ContainsAny(host, " \t\n\r\x00'\"\\/@") {
		return "", "", "", fmt.Errorf("bad host %q", host)
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", "", "", fmt.Errorf("bad port %q", port)
		}
	}
	return login, host, port, nil
}

// pair holds two opened replicas and how to release them.
type pair struct {
	a, b    replica.Replica
	clients []*wire.Client
	closers []func() error
}

func (p *pair) close() error {
	var first error
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// roundTrips sums the protocol round trips of the remote sides.
func (p *pair) roundTrips() int {
	n := 0
	for _, c := range p.clients {
		n += c.RoundTrips
	}
	return n
}

// replicaOptions are the index options every opened replica gets.
type replicaOptions struct {
	lockTimeout timeoutT
	dryRun      bool
	massMin     int
	massFrac    float64
	massExempt  []string
	flagCmd     string
}

func (o replicaOptions) index(g *globals, user, idx string) index.Options {
	opt := index.Options{User: user, IndexPath: idx, LockTimeout: o.lockTimeout, Logger: g.log, DryRun: o.dryRun, MassExpungeMin: o.massMin, MassExpungeFraction: o.massFrac, FlagChangeCommand: o.flagCmd, SpecialUse: g.specialUse()}
	if len(o.massExempt) > 0 {
		pats := o.massExempt
		opt.MassExpungeExempt = func(name string) bool {
			for _, p := range pats {
				if session.Match(p, name) {
					return true
				}
			}
			return false
		}
	}
	return opt
}

// selfNode says where a local root lives.
func (g *globals) selfNode(root string) (wire.Node, error) {
	cfg, err := g.config()
	if err != nil {
		return wire.Node{}, err
	}
	host, _ := os.Hostname()
	return wire.Node{ID: cfg.ReplicaID, Host: host, Root: root}, nil
}

// errSameHostID is a misconfiguration: two hosts with one replica ID.
var errSameHostID = errors.New("both hosts have the same replica_id: give each host its own in twinbox.toml (or TWINBOX_REPLICA_ID)")

// openSide is one replica on its way to being opened.
type openSide struct {
	e    endpoint
	idx  string
	dst  *replica.Replica
	node *wire.Node
	cl   *wire.Client // remote (also the in-process server of a local pair)
}

// openPair opens both replicas. The second of two local replicas is served
// in process over a pipe, through the same protocol a remote peer uses.
// Locks are taken in the order of the replicas' nodes (replica ID, then
// root), the same order whichever host starts the sync, so that two syncs
// of the same pair started at once serialise instead of deadlocking.
func openPair(g *globals, a, b string, indexA, indexB string, ro replicaOptions) (*pair, error) {
	return openPairUser(g, "", a, b, indexA, indexB, ro)
}

func openPairUser(g *globals, user, a, b string, indexA, indexB string, ro replicaOptions) (*pair, error) {
	ea, err := parseEndpoint(g, a, user)
	if err != nil {
		return nil, err
	}
	eb, err := parseEndpoint(g, b, user)
	if err != nil {
		return nil, err
	}
	p := &pair{}
	fail := func(err error) (*pair, error) {
		p.close()
		return nil, err
	}
	sides := []*openSide{{e: ea, idx: indexA, dst: &p.a}, {e: eb, idx: indexB, dst: &p.b}}
	if ea.local() && eb.local() {
		// Serve the second one in process.
		loc, idx := eb.loc, indexB
		eb.dial = func(ctx context.Context) (io.ReadWriteCloser, error) {
			node, err := g.selfNode(loc.Root)
			if err != nil {
				return nil, err
			}
			conn, wait, err := transport.ServeInProcess(ctx, &wire.Server{
				Open: func(ctx contextT, u string, peer replica.Info) (replica.Replica, error) {
					return index.Open(ctx, loc, ro.index(g, user, idx))
				},
				Node: func(string) (wire.Node, error) { return node, nil },
				Log:  g.log,
			})
			if err != nil {
				return nil, err
			}
			p.closers = append(p.closers, wait)
			return conn, nil
		}
		sides[1].e = eb
	}
	// Connect to the remote sides and learn where every side lives.
	for _, s := range sides {
		if s.e.local() {
			n, err := g.selfNode(s.e.loc.Root)
			if err != nil {
				return fail(err)
			}
			s.node = &n
			continue
		}
		conn, err := s.e.dial(g.ctx)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", s.e.arg, err))
		}
		if s.e.prefix {
			if _, err := io.WriteString(conn, user+"\n"); err != nil {
				conn.Close()
				return fail(fmt.Errorf("%s: %w", s.e.arg, err))
			}
		}
		var self *wire.Node
		for _, o := range sides {
			if o != s && o.e.local() {
				n, err := g.selfNode(o.e.loc.Root)
				if err != nil {
					conn.Close()
					return fail(err)
				}
				self = &n
			}
		}
		cl, err := wire.Handshake(g.ctx, conn, user, self)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", s.e.arg, err))
		}
		cl.Name = s.e.arg
		if user != "" {
			cl.Name += " (user " + user + ")"
		}
		s.cl = cl
		p.clients = append(p.clients, cl)
		p.closers = append(p.closers, cl.Close)
		s.node = cl.Peer()
	}
	na, nb := sides[0].node, sides[1].node
	if na != nil && nb != nil {
		switch {
		case na.Key() == nb.Key():
			return fail(fmt.Errorf("%s and %s are the same replica (replica ID %q, root %s)", a, b, na.ID, na.Root))
		case na.ID == nb.ID && na.Host != nb.Host:
			return fail(fmt.Errorf("%s (host %s) and %s (host %s): %w", a, na.Host, b, nb.Host, errSameHostID))
		}
	}
	// Lock in node order; a side that did not say where it lives last.
	order := []*openSide{sides[0], sides[1]}
	key := func(s *openSide) string {
		if s.node == nil {
			return "\xff"
		}
		return s.node.Key()
	}
	sort.SliceStable(order, func(i, j int) bool { return key(order[i]) < key(order[j]) })
	for i, s := range order {
		if i == 1 {
			testPauseBetweenLocks()
		}
		if s.e.local() {
			r, err := index.Open(g.ctx, s.e.loc, ro.index(g, user, s.idx))
			if err != nil {
				return fail(err)
			}
			p.closers = append(p.closers, r.Close)
			*s.dst = r
			continue
		}
		self := replica.Info{ReplicaID: "relay"}
		if i == 1 && order[0].dst != nil && *order[0].dst != nil {
			self = (*order[0].dst).Info()
		} else if n := order[1-i].node; n != nil {
			self = replica.Info{ReplicaID: n.ID, Root: n.Root}
		}
		if err := s.cl.Open(g.ctx, self); err != nil {
			return fail(fmt.Errorf("%s: %w", s.e.arg, err))
		}
		*s.dst = s.cl
	}
	return p, nil
}

// testPauseBetweenLocks widens the moment between taking the first and the
// second replica's lock, for the test that two syncs started at once from
// both hosts never deadlock (TWINBOX_TEST_PAUSE_BETWEEN_LOCKS=300ms).
func testPauseBetweenLocks() {
	if v := os.Getenv("TWINBOX_TEST_PAUSE_BETWEEN_LOCKS"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 && d < time.Minute {
			time.Sleep(d)
		}
	}
}
