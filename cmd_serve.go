package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/twinbox-mail/twinbox/config"
	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/transport/tcp"
	"github.com/twinbox-mail/twinbox/wire"
	"github.com/twinbox-mail/twinbox/wrapper"
)

// replicaArgs turns the arguments of sync/backup/check into two replicas:
// A and B as given, or, with -u USER, USER's replica here and the peer.
func replicaArgs(g *globals, user, a, b string) (string, string, error) {
	if user == "" {
		if a == "" || b == "" {
			return "", "", errors.New("give two replicas, or -u USER [PEER]")
		}
		return a, b, nil
	}
	if b != "" {
		return "", "", fmt.Errorf("with -u %s give only the peer (%q and %q given)", user, a, b)
	}
	cfg, err := g.config()
	if err != nil {
		return "", "", err
	}
	peer := a
	if peer == "" {
		peer = cfg.Peer
	}
	if peer == "" {
		return "", "", fmt.Errorf("user %s: no peer given and none configured (peer in twinbox.toml, or TWINBOX_PEER)", user)
	}
	us, err := cfg.UserSource()
	if err != nil {
		return "", "", err
	}
	u, err := us.Lookup(g.ctx, user)
	if err != nil {
		return "", "", err
	}
	return u.Location, peer, nil
}

func runServe(g *globals, c *ServeCmd) error {
	var in io.Reader = os.Stdin
	switch {
	case c.UserPrefix:
		user, err := wrapper.ReadUserLine(in)
		if err != nil {
			return err
		}
		return serveUser(g, user, nil, c.Index, c.LockTimeout, c.FlagChangeCmd)
	case c.User != "":
		return serveUser(g, c.User, nil, c.Index, c.LockTimeout, c.FlagChangeCmd)
	case c.Root == "":
		return errors.New("serve: give --root PATH, -u USER or --user-prefix")
	}
	loc, err := maildir.ParseLocation(c.Root)
	if err != nil {
		return err
	}
	node, err := g.selfNode(loc.Root)
	if err != nil {
		return err
	}
	srv := &wire.Server{
		Open: func(ctx contextT, user string, peer replica.Info) (replica.Replica, error) {
			return index.Open(ctx, loc, index.Options{User: user, IndexPath: c.Index, LockTimeout: c.LockTimeout, Logger: g.log, FlagChangeCommand: g.flagChangeCommand(c.FlagChangeCmd), SpecialUse: g.specialUse()})
		},
		Node: func(string) (wire.Node, error) { return node, nil },
		Log:  g.log,
	}
	return endOK(srv.Serve(g.ctx, stdio{}))
}

func endOK(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// serveUser serves user's replica on stdin/stdout, as the mail's owner.
// A user it cannot serve is refused inside the protocol's handshake, so
// that the peer prints the reason.
func serveUser(g *globals, user string, allow []string, idx string, lockTimeout time.Duration, flagCmd string) error {
	u, err := lookupServed(g, user, allow)
	if err == nil {
		if err = wrapper.DropPrivileges(u.UID, u.GID, false); err != nil {
			err = fmt.Errorf("user %s: %w", user, err)
		}
	}
	var loc maildir.Location
	if err == nil {
		if loc, err = maildir.ParseLocation(u.Location); err != nil {
			err = fmt.Errorf("user %s: %w", user, err)
		}
	}
	if err != nil {
		g.log.Warn("refused", "user", user, "err", err)
	}
	var node wire.Node
	if err == nil {
		node, err = g.selfNode(loc.Root)
	}
	srv := &wire.Server{
		Node: func(asked string) (wire.Node, error) {
			if err != nil {
				return wire.Node{}, err
			}
			if asked != "" && asked != user {
				g.log.Warn("refused", "user", user, "asked", asked)
				return wire.Node{}, fmt.Errorf("this connection serves user %s, not %s", user, asked)
			}
			return node, nil
		},
		Open: func(ctx context.Context, _ string, peer replica.Info) (replica.Replica, error) {
			g.log.Info("serving", "user", user, "root", loc.Root, "peer", peer.ReplicaID, "uid", os.Geteuid(), "gid", os.Getegid())
			return index.Open(ctx, loc, index.Options{User: user, IndexPath: idx, LockTimeout: lockTimeout, Logger: g.log, FlagChangeCommand: g.flagChangeCommand(flagCmd), SpecialUse: g.specialUse()})
		},
		Log: g.log,
	}
	serr := endOK(srv.Serve(g.ctx, stdio{}))
	if err != nil {
		return err
	}
	return serr
}

func lookupServed(g *globals, user string, allow []string) (config.User, error) {
	if err := config.ValidUserName(user); err != nil {
		return config.User{}, fmt.Errorf("refused: %w", err)
	}
	if len(allow) > 0 {
		ok := false
		for _, p := range allow {
			if config.MatchUser(p, user) {
				ok = true
				break
			}
		}
		if !ok {
			return config.User{}, fmt.Errorf("refused: user %s is not allowed here", user)
		}
	}
	cfg, err := g.config()
	if err != nil {
		return config.User{}, err
	}
	us, err := cfg.UserSource()
	if err != nil {
		return config.User{}, err
	}
	return us.Lookup(g.ctx, user)
}

// stdio is our stdin and stdout as one stream.
type stdio struct{}

func (stdio) Read(b []byte) (int, error)  { return os.Stdin.Read(b) }
func (stdio) Write(b []byte) (int, error) { return os.Stdout.Write(b) }

// WrapperCmd is `twinbox wrapper`, the forced command of an OpenSSH
// authorized_keys line:
//
//	restrict,command="/usr/local/bin/twinbox wrapper" ssh-ed25519 AAAA... mx1
type WrapperCmd struct {
	Allow       []string      `help:"Serve only users matching PATTERN (* and ?); repeatable. Default: every user the user source knows." placeholder:"PATTERN"`
	Index       string        `help:"Index file (default: <root>/twinbox.db)." hidden:""`
	LockTimeout time.Duration `name:"lock-timeout" default:"30s" help:"How long to wait for the replica's lock." env:"TWINBOX_LOCK_TIMEOUT"`
}

func (c *WrapperCmd) Run(g *globals) error {
	orig, set := os.LookupEnv("SSH_ORIGINAL_COMMAND")
	req, err := wrapper.ParseCommand(orig)
	if err != nil {
		g.log.Warn("wrapper refused", "command", orig, "err", err)
		return err
	}
	if !set && !req.Prefix {
		return errors.New("wrapper: not started by OpenSSH (no SSH_ORIGINAL_COMMAND)")
	}
	user := req.User
	if req.Prefix {
		if user, err = wrapper.ReadUserLine(os.Stdin); err != nil {
			g.log.Warn("wrapper refused", "err", err)
			return err
		}
	}
	return serveUser(g, user, c.Allow, c.Index, c.LockTimeout, "")
}

// ConfigCmd is `twinbox config check`.
type ConfigCmd struct {
	Check ConfigCheckCmd `cmd:"" help:"Validate the configuration (and the files it names) and print the effective settings."`
}

// ConfigCheckCmd checks the configuration.
type ConfigCheckCmd struct{}

func (ConfigCheckCmd) Run(g *globals) error {
	cfg, err := g.config()
	if err != nil {
		return err
	}
	var problems []string
	if us, err := cfg.UserSource(); err != nil {
		problems = append(problems, err.Error())
	} else if names, err := us.List(g.ctx); err != nil {
		problems = append(problems, err.Error())
	} else if names != nil {
		fmt.Fprintf(os.Stderr, "user source lists %d users\n", len(names))
	}
	for _, s := range cfg.Listen.Secrets {
		if _, err := tcp.ReadKeyFile(s.File); err != nil {
			problems = append(problems, fmt.Sprintf("listen.secret %q: %v", s.Name, err))
		}
	}
	if cfg.Client.SecretFile != "" {
		if _, err := tcp.ReadKeyFile(cfg.Client.SecretFile); err != nil {
			problems = append(problems, fmt.Sprintf("client.secret_file: %v", err))
		}
	}
	sshdKeys := ""
	if cfg.Defined("sshd") {
		sshdKeys = cfg.SSHD.AuthorizedKeys
	}
	for _, f := range []struct{ name, path string }{
		{"sshd.authorized_keys", sshdKeys},
		{"listen.cert_file", cfg.Listen.CertFile}, {"listen.key_file", cfg.Listen.KeyFile},
		{"listen.client_ca_file", cfg.Listen.ClientCAFile}, {"client.ca_file", cfg.Client.CAFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f.name, err))
		}
	}
	if err := cfg.Effective(os.Stdout); err != nil {
		return err
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "problem:", p)
		}
		return fmt.Errorf("config: %d problem(s)", len(problems))
	}
	return nil
}

// Help adds the replica forms to `sync --help`.
func (*SyncCmd) Help() string { return replicaHelp }

// Help adds the replica forms to `backup --help`.
func (*BackupCmd) Help() string { return replicaHelp }

// Help adds the replica forms to `check --help`.
func (*CheckCmd) Help() string { return replicaHelp }
