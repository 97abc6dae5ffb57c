package sshd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/twinbox-mail/twinbox/sshd"
)

func TestAcceptedSession(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "alice-key")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice,*@example.com" ` + k.line}})
	c := ts.mustDial(t, k)
	out, _, err := run(t, c, "twinbox serve -u alice", "one\ntwo\n")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if out != "alice:one\nalice:two\n" {
		t.Fatalf("output %q", out)
	}
	ts.log.wait(t, "session accepted", "user", "alice", "fingerprint", k.fp, "remote", "127.0.0.1", "login", "vmail")
	ts.log.wait(t, "session ended", "user", "alice")

	// "serve -u" without the program name, and a pattern user, on a new
	// connection (one session per connection).
	c2 := ts.mustDial(t, k)
	out, _, err = run(t, c2, "serve -u bob@example.com", "x\n")
	if err != nil || out != "bob@example.com:x\n" {
		t.Fatalf("serve -u bob@example.com: %q %v", out, err)
	}
}

func TestServeErrorIsExitStatus(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}})
	c := ts.mustDial(t, k)
	_, stderr, err := run(t, c, "twinbox serve -u alice", "fail\n")
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
		t.Fatalf("err = %v, want exit status 1", err)
	}
	if stderr != "twinbox: asked to fail second line\n" {
		t.Fatalf("stderr %q, want the error on one line", stderr)
	}
	ts.log.wait(t, "session failed", "user", "alice", "err", "asked to fail")
}

func TestUnknownKeyRefused(t *testing.T) {
	d := t.TempDir()
	known, unknown := newClientKey(t, d, "known"), newClientKey(t, d, "unknown")
	ts := startServer(t, serverOpts{authorized: []string{`users="*" ` + known.line}})
	if c, err := ts.dial(t, unknown); err == nil {
		c.Close()
		t.Fatal("an unknown key authenticated")
	}
	ts.log.wait(t, "key refused", "fingerprint", unknown.fp, "reason", "key not in the authorized keys file", "remote", "127.0.0.1")
	if ts.served.Load() != 0 {
		t.Fatal("Serve ran")
	}
}

func TestUserLimit(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}})
	c := ts.mustDial(t, k)
	_, _, err := run(t, c, "twinbox serve -u bob", "")
	if err == nil {
		t.Fatal("a key limited to alice synced bob")
	}
	ts.log.wait(t, "refused", "user", "bob", "fingerprint", k.fp, "reason", `user "bob" not allowed by users="alice"`)
	if ts.served.Load() != 0 {
		t.Fatal("Serve ran")
	}
}

func TestNoUsersOptionRefused(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{k.line}})
	ts.log.wait(t, "has no users= option", "line", "1")
	if c, err := ts.dial(t, k); err == nil {
		c.Close()
		t.Fatal("a key without users= authenticated")
	}
	ts.log.wait(t, "key refused", "fingerprint", k.fp, "reason", "the key has no users= option")
}

func TestFromRefused(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`from="10.0.0.0/8,::1",users="*" ` + k.line}})
	if c, err := ts.dial(t, k); err == nil {
		c.Close()
		t.Fatal("a key limited to 10.0.0.0/8 connected from 127.0.0.1")
	}
	ts.log.wait(t, "key refused", "fingerprint", k.fp, "reason", `source address 127.0.0.1 not allowed by from="10.0.0.0/8,::1"`)

	// A negation wins over a positive match; a matching from= lets in.
	ts.writeAuth(t, `from="127.0.0.0/8,!127.0.0.1",users="*" `+k.line)
	if c, err := ts.dial(t, k); err == nil {
		c.Close()
		t.Fatal("a negated address connected")
	}
	ts.writeAuth(t, `from="127.0.0.*",users="*" `+k.line)
	c := ts.mustDial(t, k)
	if out, _, err := run(t, c, "twinbox serve -u x", "y\n"); err != nil || out != "x:y\n" {
		t.Fatalf("from=127.0.0.*: %q %v", out, err)
	}
}

func TestBadUserNames(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="*" ` + k.line}})
	for _, u := range []string{"../x", "a/b", "-x", "a\x01b", "..", strings.Repeat("u", 300)} {
		c := ts.mustDial(t, k)
		if _, _, err := run(t, c, "twinbox serve -u "+u, ""); err == nil {
			t.Errorf("user %q accepted", u)
		}
		c.Close()
	}
	for _, why := range []string{`"../x" contains '/'`, `".." contains ".."`, `"a/b" contains '/'`, `"-x" starts with '-'`, `"twinbox serve -u a\x01b" not allowed`, "longer than 255 bytes"} {
		ts.log.wait(t, "refused", "reason", why, "fingerprint", k.fp)
	}
	if ts.served.Load() != 0 {
		t.Fatal("Serve ran")
	}
}

func TestOtherCommandsRefused(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="*" ` + k.line}})
	for _, cmd := range []string{"ls", "twinbox serve -u alice; ls", "twinbox serve --root /", "twinbox serve -u alice extra", "sh -c 'twinbox serve -u alice'", "twinbox serve -u alice\nls", ""} {
		c := ts.mustDial(t, k)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		stderr, _ := s.StderrPipe()
		if err := s.Start(cmd); err == nil {
			t.Errorf("command %q accepted", cmd)
		}
		msg, _ := io.ReadAll(stderr)
		if !strings.Contains(string(msg), "twinbox sshd: refused: ") || !strings.Contains(string(msg), "not allowed") {
			t.Errorf("command %q: stderr %q", cmd, msg)
		}
		c.Close()
	}
	for _, cmd := range []string{`"ls"`, `"twinbox serve -u alice; ls"`, `"twinbox serve --root /"`} {
		ts.log.wait(t, "refused", "reason", "command "+cmd+" not allowed", "fingerprint", k.fp)
	}
	if ts.served.Load() != 0 {
		t.Fatal("Serve ran")
	}
}

func TestSessionRequestsRefused(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}})

	// Shell.
	c := ts.mustDial(t, k)
	s, _ := c.NewSession()
	if err := s.Shell(); err == nil {
		t.Error("shell accepted")
	}
	ts.log.wait(t, "refused", "reason", "shell request not allowed", "fingerprint", k.fp)

	// Subsystem.
	c = ts.mustDial(t, k)
	s, _ = c.NewSession()
	if err := s.RequestSubsystem("sftp"); err == nil {
		t.Error("sftp subsystem accepted")
	}
	ts.log.wait(t, "refused", "reason", `subsystem "sftp" not allowed`)

	// pty, env, X11 and agent forwarding are declined; the sync command
	// still runs on the session, without any of them.
	c = ts.mustDial(t, k)
	s, _ = c.NewSession()
	if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Error("pty accepted")
	}
	ts.log.wait(t, "refused", "reason", "pty request not allowed")
	if err := s.Setenv("LANG", "C"); err == nil {
		t.Error("env accepted")
	}
	ts.log.wait(t, "env request ignored", "name", "LANG")
	if ok, err := s.SendRequest("x11-req", true, gossh.Marshal(struct {
		Single        bool
		Proto, Cookie string
		Screen        uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00", 0})); ok || err != nil {
		t.Errorf("x11-req: %v %v", ok, err)
	}
	ts.log.wait(t, "refused", "reason", "X11 forwarding not allowed")
	if err := agent.RequestAgentForwarding(s); err == nil {
		t.Error("agent forwarding accepted")
	}
	ts.log.wait(t, "refused", "reason", "agent forwarding not allowed")
	var out strings.Builder
	s.Stdout = &out
	s.Stdin = strings.NewReader("hi\n")
	if err := s.Run("twinbox serve -u alice"); err != nil || out.String() != "alice:hi\n" {
		t.Fatalf("sync command after the refusals: %q %v", out.String(), err)
	}

	// A second session channel on one connection.
	c = ts.mustDial(t, k)
	if _, err := c.NewSession(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewSession(); err == nil {
		t.Error("a second session channel was accepted")
	}
	ts.log.wait(t, "refused", "reason", "a second session channel")
}

func TestPortForwardingRefused(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="*" ` + k.line}})
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	c := ts.mustDial(t, k)

	// Local forwarding: a direct-tcpip channel.
	conn, err := c.Dial("tcp", target.Addr().String())
	if err == nil {
		conn.Close()
		t.Fatal("direct-tcpip accepted")
	}
	var oce *gossh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != gossh.Prohibited {
		t.Fatalf("direct-tcpip: %v", err)
	}
	ts.log.wait(t, "refused", "reason", "port forwarding (direct-tcpip) not allowed", "fingerprint", k.fp)

	// Remote forwarding: a tcpip-forward global request.
	if l, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
		t.Fatal("tcpip-forward accepted")
	}
	ts.log.wait(t, "refused", "reason", "remote port forwarding (tcpip-forward) not allowed")

	// Other channel types.
	if ch, _, err := c.OpenChannel("x11", nil); err == nil {
		ch.Close()
		t.Fatal("x11 channel accepted")
	}
	ts.log.wait(t, "refused", "reason", `channel type "x11" not allowed`)
}

// The key is checked again when the session asks to sync: a key removed
// from the file (or narrowed) after authentication is refused.
func TestKeyRecheckedInSession(t *testing.T) {
	d := t.TempDir()
	k, other := newClientKey(t, d, "k"), newClientKey(t, d, "other")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}})

	c := ts.mustDial(t, k)
	ts.writeAuth(t, `users="alice" `+other.line)
	if _, _, err := run(t, c, "twinbox serve -u alice", ""); err == nil {
		t.Fatal("a key removed after authentication synced")
	}
	ts.log.wait(t, "refused", "user", "alice", "fingerprint", k.fp, "reason", "key not in the authorized keys file")

	// The file is read again: the other key works now, without a restart.
	c2 := ts.mustDial(t, other)
	if out, _, err := run(t, c2, "twinbox serve -u alice", "a\n"); err != nil || out != "alice:a\n" {
		t.Fatalf("new key: %q %v", out, err)
	}

	// Narrowed after authentication.
	ts.writeAuth(t, `users="alice" `+other.line)
	c3 := ts.mustDial(t, other)
	ts.writeAuth(t, `users="bob" `+other.line)
	if _, _, err := run(t, c3, "twinbox serve -u alice", ""); err == nil {
		t.Fatal("a key narrowed after authentication synced alice")
	}
	ts.log.wait(t, "refused", "user", "alice", "fingerprint", other.fp, "reason", `not allowed by users="bob"`)
}

func TestAuthorizedKeysFileChecks(t *testing.T) {
	d := t.TempDir()
	k, k2 := newClientKey(t, d, "k"), newClientKey(t, d, "k2")
	ts := startServer(t, serverOpts{authorized: []string{
		`command="/bin/sh",users="*" ` + k2.line,
		`users="alice" ` + k.line,
	}})
	// The bad line is refused, named by file and line; the good one works.
	ts.log.wait(t, "line refused", "file", ts.authPath, "line", "1", "reason", "command= is not supported")
	if c, err := ts.dial(t, k2); err == nil {
		c.Close()
		t.Fatal("the key of a refused line authenticated")
	}
	c := ts.mustDial(t, k)
	if out, _, err := run(t, c, "twinbox serve -u alice", "z\n"); err != nil || out != "alice:z\n" {
		t.Fatalf("%q %v", out, err)
	}

	// A group-writable file refuses every key.
	if err := os.Chmod(ts.authPath, 0o664); err != nil {
		t.Fatal(err)
	}
	if c, err := ts.dial(t, k); err == nil {
		c.Close()
		t.Fatal("a key of a group-writable file authenticated")
	}
	ts.log.wait(t, "authorized keys file unusable", "err", "writable by group or others")
	ts.log.wait(t, "key refused", "fingerprint", k.fp, "reason", "writable by group or others")

	// A missing file too.
	os.Remove(ts.authPath)
	if c, err := ts.dial(t, k); err == nil {
		c.Close()
		t.Fatal("a key authenticated with no authorized keys file")
	}
	ts.log.wait(t, "key refused", "reason", "no such file")
}

func TestHostKey(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	hk := filepath.Join(d, "keys", "host")
	ts := startServer(t, serverOpts{authorized: []string{`users="*" ` + k.line}, hostKey: hk})
	fi, err := os.Stat(hk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("new host key has mode %04o", fi.Mode().Perm())
	}
	fp := gossh.FingerprintSHA256(ts.HostKey())
	ts.log.wait(t, "created a new host key", "fingerprint", fp, "type", "ssh-ed25519")
	pub, err := os.ReadFile(hk + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, err := gossh.ParseAuthorizedKey(pub)
	if err != nil || gossh.FingerprintSHA256(pk) != fp {
		t.Fatalf("%s.pub: %v %v", hk, pk, err)
	}

	// A second server on the same file has the same key, and says so.
	ts2 := startServer(t, serverOpts{authorized: []string{`users="*" ` + k.line}, hostKey: hk})
	if gossh.FingerprintSHA256(ts2.HostKey()) != fp {
		t.Fatal("the host key changed across restarts")
	}
	ts2.log.wait(t, "host key", "fingerprint", fp, "file", hk)
	if ts2.log.has("created a new host key") {
		t.Fatal("the second server created a key")
	}

	newCfg := func(path string) error {
		_, err := sshd.New(sshd.Config{HostKeyPath: path, AuthorizedKeysPath: ts.authPath, Serve: echoServe})
		return err
	}
	// Readable by others: refused.
	if err := os.Chmod(hk, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := newCfg(hk); err == nil || !strings.Contains(err.Error(), "accessible by group or others (mode 0644)") {
		t.Fatalf("mode 0644 host key: %v", err)
	}
	// Garbage: refused.
	bad := filepath.Join(d, "bad")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	if err := newCfg(bad); err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Fatalf("garbage host key: %v", err)
	}
	// No authorized keys file: refused.
	if _, err := sshd.New(sshd.Config{HostKeyPath: filepath.Join(d, "h2"), AuthorizedKeysPath: filepath.Join(d, "none"), Serve: echoServe}); err == nil || !strings.Contains(err.Error(), "authorized keys file") {
		t.Fatalf("missing authorized keys: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ended := make(chan error, 1)
	ts := startServer(t, serverOpts{
		authorized: []string{`users="alice" ` + k.line},
		idle:       200 * time.Millisecond,
		serve: func(ctx context.Context, user string, rw io.ReadWriter) error {
			// Wait for a byte that never comes.
			_, err := rw.Read(make([]byte, 1))
			ended <- err
			return err
		},
	})
	c := ts.mustDial(t, k)
	s, _ := c.NewSession()
	in, _ := s.StdinPipe() // kept open: silence, not EOF
	defer in.Close()
	if err := s.Start("twinbox serve -u alice"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("Serve's read succeeded")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the silent session did not end")
	}
	if err := s.Wait(); err == nil {
		t.Fatal("the client saw a clean exit")
	}
	ts.log.wait(t, "idle timeout", "user", "alice", "fingerprint", k.fp)
}

func TestHandshakeTimeout(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}, handshake: 200 * time.Millisecond})
	// A TCP connection that never speaks SSH is closed.
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("the silent connection was not closed by the server: %v", err)
	}
	nc.Close()
	ts.log.wait(t, "refused", "reason", "handshake timeout")

	// An authenticated connection that never asks to sync is closed too.
	if c, err := ts.dial(t, k); err == nil {
		c.Wait()
		c.Close()
		ts.log.wait(t, "refused", "reason", "handshake timeout", "fingerprint", k.fp)
	}
	if ts.served.Load() != 0 {
		t.Fatal("Serve ran")
	}
}

func TestSessionTimeLimit(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{
		authorized: []string{`users="alice" ` + k.line},
		total:      2 * time.Second,
		serve: func(ctx context.Context, user string, rw io.ReadWriter) error {
			// Busy, not idle: a byte every 50ms until the connection ends.
			for ctx.Err() == nil {
				if _, err := rw.Write([]byte{'.'}); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
			}
			return ctx.Err()
		},
	})
	c := ts.mustDial(t, k)
	s, _ := c.NewSession()
	out, _ := s.StdoutPipe()
	if err := s.Start("twinbox serve -u alice"); err == nil {
		// Reads until the server closes the connection.
		io.Copy(io.Discard, out)
	}
	// Whether the limit struck before or during the session, the
	// connection ends and the log says why.
	c.Wait()
	ts.log.wait(t, "session time limit reached")
}

// Close ends running sessions: their ctx is cancelled and Close waits.
func TestCloseEndsSessions(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	started := make(chan struct{})
	ts := startServer(t, serverOpts{
		authorized: []string{`users="alice" ` + k.line},
		serve: func(ctx context.Context, user string, rw io.ReadWriter) error {
			info, ok := sshd.SessionInfo(ctx)
			if !ok || info.User != user || info.Fingerprint == "" || info.Login != "vmail" {
				return errors.New("bad session info")
			}
			close(started)
			<-ctx.Done()
			return ctx.Err()
		},
	})
	c := ts.mustDial(t, k)
	s, _ := c.NewSession()
	if err := s.Start("twinbox serve -u alice"); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := ts.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err == nil {
		t.Fatal("session ended cleanly after Close")
	}
	ts.log.wait(t, "session failed", "user", "alice", "err", "context canceled")
}
