package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// DefaultSSHCommand is the remote command of an ssh:// peer; %u is the
// mail user.
const DefaultSSHCommand = "twinbox serve -u %u"

// SSHOptions configures the built-in SSH client.
type SSHOptions struct {
	// Addr is host[:port] of the peer (port 22 by default; IPv6 in
	// brackets).
	Addr string
	// Login is the SSH user name (default: the local user's name).
	Login string
	// User is the mail user to sync; it replaces %u in Command.
	User string
	// IdentityFiles are private keys to offer. Default: those of
	// ~/.ssh/id_ed25519, id_ecdsa and id_rsa that exist and are not
	// encrypted. A listed file that is missing or encrypted is an error.
	IdentityFiles []string
	// Agent offers the keys of the agent at $SSH_AUTH_SOCK (when set)
	// before the identity files.
	Agent bool
	// KnownHostsFiles are checked for the peer's host key (default
	// ~/.ssh/known_hosts). An unknown key fails with the line to add; a
	// changed key always fails.
	KnownHostsFiles []string
	// AcceptNewHostKey appends an unknown host's key to the first known
	// hosts file and goes on (OpenSSH's StrictHostKeyChecking=accept-new).
	// A changed key still fails.
	AcceptNewHostKey bool
	// Timeout bounds the TCP connect and SSH handshake, and Close's wait
	// for the remote command's exit status (default 30s).
	Timeout time.Duration
	// Command is the remote command (DefaultSSHCommand); %u is replaced by
	// User, %% by %.
	Command string
	// Stderr, if set, receives the remote command's stderr as it comes
	// (the last few KiB are kept for errors either way).
	Stderr io.Writer
}

// ParseSSHURL parses "ssh://[login@]host[:port]" into the options' Addr
// and Login. No password, path, query or fragment is allowed.
func ParseSSHURL(s string) (SSHOptions, error) {
	u, err := url.Parse(s)
	if err != nil {
		return SSHOptions{}, fmt.Errorf("ssh URL %q: %v", s, err)
	}
	if u.Scheme != "ssh" {
		return SSHOptions{}, fmt.Errorf("ssh URL %q: scheme must be ssh://", s)
	}
	if u.Opaque != "" || u.Host == "" {
		return SSHOptions{}, fmt.Errorf("ssh URL %q: no host (want ssh://[login@]host[:port])", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return SSHOptions{}, fmt.Errorf("ssh URL %q: a path, query or fragment is not allowed", s)
	}
	var o SSHOptions
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return SSHOptions{}, fmt.Errorf("ssh URL %q: passwords are not supported (keys only)", s)
		}
		o.Login = u.User.Username()
		if o.Login == "" {
			return SSHOptions{}, fmt.Errorf("ssh URL %q: empty login name", s)
		}
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return SSHOptions{}, fmt.Errorf("ssh URL %q: no host", s)
	}
	if port == "" {
		port = "22"
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return SSHOptions{}, fmt.Errorf("ssh URL %q: bad port %q", s, port)
	}
	o.Addr = net.JoinHostPort(host, port)
	return o, nil
}

// sshConn is the remote command's stdout (read) and stdin (write).
type sshConn struct {
	client *gossh.Client
	sess   *gossh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr *TailBuffer
	// stderrDone is closed when the remote stderr ended.
	stderrDone chan struct{}
	addr       string
	timeout    time.Duration
	stop       func() bool

	once sync.Once
	err  error
}

func (c *sshConn) Read(b []byte) (int, error)  { return c.stdout.Read(b) }
func (c *sshConn) Write(b []byte) (int, error) { return c.stdin.Write(b) }

// Close ends the remote command's stdin and waits (at most Timeout) for
// its exit status; a non-zero status becomes an error with the tail of
// the remote stderr.
func (c *sshConn) Close() error {
	c.once.Do(func() {
		c.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- c.sess.Wait() }()
		var err error
		timeout := time.NewTimer(c.timeout)
		defer timeout.Stop()
		select {
		case err = <-done:
			select {
			case <-c.stderrDone:
			case <-timeout.C:
			}
		case <-timeout.C:
			err = fmt.Errorf("no exit status within %v", c.timeout)
		}
		c.stop()
		c.client.Close()
		if err != nil {
			var ee *gossh.ExitError
			var missing *gossh.ExitMissingError
			switch {
			case errors.As(err, &ee):
				err = fmt.Errorf("remote command exited with status %d", ee.ExitStatus())
			case errors.As(err, &missing):
				err = errors.New("remote command ended without an exit status")
			}
			if msg := strings.TrimSpace(c.stderr.String()); msg != "" {
				err = fmt.Errorf("%w: %s", err, msg)
			}
			c.err = fmt.Errorf("ssh %s: %w", c.addr, err)
		}
	})
	return c.err
}

// SSH connects to o.Addr with the built-in SSH client, checks the host
// key against known_hosts, authenticates with the agent and identity
// files, and runs o.Command; the stream is the command's stdin and
// stdout. Cancelling ctx closes the connection.
func SSH(ctx context.Context, o SSHOptions) (io.ReadWriteCloser, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	addr := o.Addr
	if addr == "" {
		return nil, errors.New("ssh: no address")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "22")
	}
	if err := checkUser(o.User); err != nil {
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	cmd := o.Command
	if cmd == "" {
		cmd = DefaultSSHCommand
	}
	cmd = strings.NewReplacer("%u", o.User, "%%", "%").Replace(cmd)
	login := o.Login
	if login == "" {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("ssh %s: no login name given and none known: %v", addr, err)
		}
		login = u.Username
	}
	home, _ := os.UserHomeDir()
	khFiles := o.KnownHostsFiles
	if len(khFiles) == 0 {
		if home == "" {
			return nil, fmt.Errorf("ssh %s: no known_hosts file given and no home directory", addr)
		}
		khFiles = []string{filepath.Join(home, ".ssh", "known_hosts")}
	}
	hk, err := newHostKeyChecker(khFiles, o.AcceptNewHostKey)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	signers, closeAgent, err := loadSigners(o, home)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	defer closeAgent()
	cfg := &gossh.ClientConfig{
		User:              login,
		Auth:              []gossh.AuthMethod{gossh.PublicKeys(signers...)},
		HostKeyCallback:   hk.check,
		HostKeyAlgorithms: hk.algorithms(addr),
		Timeout:           o.Timeout,
		ClientVersion:     "SSH-2.0-twinbox",
	}
	d := net.Dialer{Timeout: o.Timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	// Bound the handshake: x/crypto's Timeout covers the dial only.
	nc.SetDeadline(time.Now().Add(o.Timeout))
	stopHS := context.AfterFunc(ctx, func() { nc.Close() })
	cc, chans, reqs, err := gossh.NewClientConn(nc, addr, cfg)
	stopHS()
	if err != nil {
		nc.Close()
		if hk.err != nil {
			return nil, hk.err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: %w", addr, ctx.Err())
		}
		if strings.Contains(err.Error(), "no common algorithm for host key") {
			return nil, fmt.Errorf("ssh %s: the server offers none of the host key types known for it in %s (%s): %w", addr, strings.Join(khFiles, ", "), strings.Join(cfg.HostKeyAlgorithms, ", "), err)
		}
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	nc.SetDeadline(time.Time{})
	client := gossh.NewClient(cc, chans, reqs)
	stop := context.AfterFunc(ctx, func() { client.Close() })
	fail := func(err error) (io.ReadWriteCloser, error) {
		stop()
		client.Close()
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	sess, err := client.NewSession()
	if err != nil {
		return fail(err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		return fail(err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	// The stderr pipe is read by our own goroutine, so that what the
	// server says when it declines the command is read too.
	stderr, err := sess.StderrPipe()
	if err != nil {
		return fail(err)
	}
	tail := &TailBuffer{Max: 4 << 10}
	var w io.Writer = tail
	if o.Stderr != nil {
		w = io.MultiWriter(tail, o.Stderr)
	}
	stderrDone := make(chan struct{})
	go func() {
		io.Copy(w, stderr)
		close(stderrDone)
	}()
	if err := sess.Start(cmd); err != nil {
		// The server writes why on stderr, then declines and closes the
		// channel.
		select {
		case <-stderrDone:
		case <-time.After(o.Timeout):
		}
		if msg := strings.TrimSpace(tail.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return fail(fmt.Errorf("running %q: %w", cmd, err))
	}
	return &sshConn{client: client, sess: sess, stdin: stdin, stdout: stdout, stderr: tail, stderrDone: stderrDone, addr: addr, timeout: o.Timeout, stop: stop}, nil
}

// checkUser refuses a mail user name that cannot be one (and could change
// the remote command's meaning).
func checkUser(u string) error {
	switch {
	case u == "":
		return errors.New("no mail user given")
	case len(u) > 255:
		return errors.New("mail user name longer than 255 bytes")
	case strings.HasPrefix(u, "-"), strings.Contains(u, "/"), strings.Contains(u, ".."):
		return fmt.Errorf("bad mail user name %q", u)
	}
	for _, r := range u {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar || strings.ContainsRune("'\"\\$`;&|<>()*?[]{}~!#", r) {
			return fmt.Errorf("bad mail user name %q", u)
		}
	}
	return nil
}

// loadSigners gathers the agent's keys (if asked and available) and the
// identity files.
func loadSigners(o SSHOptions, home string) ([]gossh.Signer, func(), error) {
	var signers []gossh.Signer
	closeAgent := func() {}
	if o.Agent {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			ac, err := net.Dial("unix", sock)
			if err != nil {
				return nil, nil, fmt.Errorf("ssh agent at %s: %w", sock, err)
			}
			closeAgent = func() { ac.Close() }
			ss, err := agent.NewClient(ac).Signers()
			if err != nil {
				ac.Close()
				return nil, nil, fmt.Errorf("ssh agent at %s: %w", sock, err)
			}
			signers = append(signers, ss...)
		}
	}
	files, explicit := o.IdentityFiles, true
	if len(files) == 0 {
		explicit = false
		if home != "" {
			for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				files = append(files, filepath.Join(home, ".ssh", n))
			}
		}
	}
	var skipped []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if !explicit && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			closeAgent()
			return nil, nil, fmt.Errorf("identity file: %w", err)
		}
		s, err := gossh.ParsePrivateKey(data)
		if err != nil {
			var pm *gossh.PassphraseMissingError
			if errors.As(err, &pm) {
				err = fmt.Errorf("%s is encrypted: add it to ssh-agent and use the agent", f)
			} else {
				err = fmt.Errorf("identity file %s: %v", f, err)
			}
			if explicit {
				closeAgent()
				return nil, nil, err
			}
			skipped = append(skipped, err.Error())
			continue
		}
		signers = append(signers, s)
	}
	if len(signers) == 0 {
		closeAgent()
		msg := "no usable SSH key: give an identity file or use an agent"
		if len(skipped) > 0 {
			msg += " (" + strings.Join(skipped, "; ") + ")"
		}
		return nil, nil, errors.New(msg)
	}
	return signers, closeAgent, nil
}

// hostKeyChecker checks host keys against known_hosts files.
type hostKeyChecker struct {
	files  []string
	db     gossh.HostKeyCallback
	accept bool
	err    error // the clear error of a refused host key
}

func newHostKeyChecker(files []string, accept bool) (*hostKeyChecker, error) {
	var existing []string
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			existing = append(existing, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("known hosts: %w", err)
		}
	}
	db, err := knownhosts.New(existing...)
	if err != nil {
		return nil, fmt.Errorf("known hosts: %w", err)
	}
	return &hostKeyChecker{files: files, db: db, accept: accept}, nil
}

// known returns the keys the files list for addr.
func (h *hostKeyChecker) known(addr string) []knownhosts.KnownKey {
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	probe, _, _ := ed25519.GenerateKey(nil)
	pk, err := gossh.NewPublicKey(probe)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if errors.As(h.db(addr, &net.TCPAddr{IP: net.IPv4zero, Port: p}, pk), &ke) {
		return ke.Want
	}
	return nil
}

// algorithms lists the host key algorithms of the keys known for addr, so
// that the server presents a key of a known type (nil: any type).
func (h *hostKeyChecker) algorithms(addr string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				out = append(out, x)
			}
		}
	}
	for _, k := range h.known(addr) {
		switch t := k.Key.Type(); t {
		case gossh.KeyAlgoRSA:
			add(gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return out
}

func (h *hostKeyChecker) check(hostname string, remote net.Addr, key gossh.PublicKey) error {
	err := h.db(hostname, remote, key)
	if err == nil {
		return nil
	}
	fp := gossh.FingerprintSHA256(key)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		h.err = fmt.Errorf("ssh %s: the host key %s %s is marked @revoked in %s:%d", hostname, key.Type(), fp, re.Revoked.Filename, re.Revoked.Line)
	case errors.As(err, &ke) && len(ke.Want) == 0:
		line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key)
		if h.accept {
			if aerr := appendKnownHost(h.files[0], line); aerr != nil {
				h.err = fmt.Errorf("ssh %s: adding the new host key to %s: %w", hostname, h.files[0], aerr)
				return h.err
			}
			return nil
		}
		h.err = fmt.Errorf("ssh %s: unknown host key %s %s\nverify this fingerprint with the peer's administrator (on the peer: ssh-keygen -lf <host key>.pub), then add this line to %s:\n%s", hostname, key.Type(), fp, h.files[0], line)
	case errors.As(err, &ke):
		var known []string
		for _, k := range ke.Want {
			known = append(known, fmt.Sprintf("%s:%d (%s %s)", k.Filename, k.Line, k.Key.Type(), gossh.FingerprintSHA256(k.Key)))
		}
		h.err = fmt.Errorf("ssh %s: HOST KEY CHANGED: the peer presents %s %s, known_hosts has %s; someone may be intercepting the connection, or the host key was replaced: check with the peer's administrator and fix known_hosts by hand", hostname, key.Type(), fp, strings.Join(known, ", "))
	default:
		h.err = fmt.Errorf("ssh %s: checking the host key: %w", hostname, err)
	}
	return h.err
}

// appendKnownHost adds line to a known_hosts file (created 0600, its
// directory 0700), on a line of its own.
func appendKnownHost(path, line string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var prefix string
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
			prefix = "\n"
		}
	}
	if _, err := f.WriteString(prefix + line + "\n"); err != nil {
		return err
	}
	return f.Sync()
}

// TailBuffer keeps the last Max bytes written to it (a program's stderr,
// whose last line says why it failed). It is safe for concurrent use.
type TailBuffer struct {
	Max int
	mu  sync.Mutex
	b   bytes.Buffer
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.Max {
		p = p[len(p)-t.Max:]
	}
	t.b.Write(p)
	if over := t.b.Len() - t.Max; over > 0 {
		t.b.Next(over)
	}
	return n, nil
}

// String returns what is kept.
func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
