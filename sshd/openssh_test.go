package sshd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/wire"
)

// opensshClient finds OpenSSH's ssh, skipping the test without it (failing
// when TWINBOX_REQUIRE_DOVECOT=1 asks for every real part).
func opensshClient(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("ssh")
	if err != nil {
		if os.Getenv("TWINBOX_REQUIRE_DOVECOT") == "1" {
			t.Fatalf("OpenSSH's ssh client is required (TWINBOX_REQUIRE_DOVECOT=1): %v", err)
		}
		t.Skipf("OpenSSH's ssh client not installed: %v", err)
	}
	return p
}

// sshArgv is an OpenSSH command line for ts: its own key, a known_hosts
// file with ts's key only, no config file, no agent, no prompts.
func sshArgv(t testing.TB, ts *testServer, key clientKey, kh string, opts []string, command ...string) []string {
	host, port, _ := net.SplitHostPort(ts.addr)
	argv := []string{opensshClient(t), "-F", "/dev/null",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + kh, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=30",
		"-i", key.file, "-p", port, "-l", "vmail"}
	argv = append(argv, opts...)
	argv = append(argv, host)
	return append(argv, command...)
}

// runSSH runs OpenSSH's ssh with stdin, returning stdout, stderr and the
// exit code.
func runSSH(t testing.TB, argv []string, stdin string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running ssh: %v", err)
	}
	return out.String(), errb.String(), code
}

func TestOpenSSHClient(t *testing.T) {
	opensshClient(t)
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}})
	kh := knownHostsFor(t, ts, d)

	// The bytes go through both ways; exit status 0.
	out, errs, code := runSSH(t, sshArgv(t, ts, k, kh, []string{"-T"}, "twinbox serve -u alice"), "ping\npong\n")
	if code != 0 || out != "alice:ping\nalice:pong\n" {
		t.Fatalf("ssh: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	ts.log.wait(t, "session accepted", "user", "alice", "fingerprint", k.fp)

	// A failing Serve: exit status 1 and its message on stderr.
	_, errs, code = runSSH(t, sshArgv(t, ts, k, kh, []string{"-T"}, "twinbox serve -u alice"), "fail\n")
	if code != 1 || !strings.Contains(errs, "twinbox: asked to fail second line") {
		t.Fatalf("failing serve: exit %d, stderr %q", code, errs)
	}

	// Refusals: another user, a shell, other commands. OpenSSH shows only
	// that the request failed (it drops what the server wrote on stderr
	// before declining); the reason is in the server's log.
	served := ts.served.Load()
	refusals := []struct {
		opts   []string
		args   []string
		reason string
	}{
		{[]string{"-T"}, []string{"twinbox serve -u bob"}, `user "bob" not allowed by users="alice"`},
		{[]string{"-T"}, []string{"twinbox serve -u ../x"}, `"../x" contains '/'`},
		{[]string{"-T"}, nil, "shell request not allowed"},
		{[]string{"-T"}, []string{"ls"}, `command "ls" not allowed`},
		{[]string{"-T"}, []string{"twinbox serve -u alice; ls"}, `command "twinbox serve -u alice; ls" not allowed`},
		{[]string{"-T"}, []string{"twinbox", "serve", "--root", "/"}, `command "twinbox serve --root /" not allowed`},
		{[]string{"-T", "-s"}, []string{"sftp"}, `subsystem "sftp" not allowed`},
	}
	for _, r := range refusals {
		out, errs, code := runSSH(t, sshArgv(t, ts, k, kh, r.opts, r.args...), "")
		if code == 0 || out != "" {
			t.Errorf("ssh %q: exit %d, stdout %q", r.args, code, out)
		}
		if !strings.Contains(errs, "request failed on channel 0") {
			t.Errorf("ssh %q: stderr %q", r.args, errs)
		}
		ts.log.wait(t, "refused", "reason", r.reason, "fingerprint", k.fp)
	}

	// An unknown key.
	other := newClientKey(t, d, "other")
	_, errs, code = runSSH(t, sshArgv(t, ts, other, kh, []string{"-T"}, "twinbox serve -u alice"), "")
	if code != 255 || !strings.Contains(errs, "Permission denied (publickey)") {
		t.Fatalf("unknown key: exit %d, stderr %q", code, errs)
	}
	ts.log.wait(t, "key refused", "fingerprint", other.fp, "reason", "key not in the authorized keys file")

	// OpenSSH checks the embedded server's host key: another key for the
	// address fails.
	kh2 := filepath.Join(d, "known_hosts_wrong")
	os.WriteFile(kh2, []byte(strings.Replace(mustRead(t, kh), fields(mustRead(t, kh))[2], fields(other.line)[1], 1)), 0o600)
	_, errs, code = runSSH(t, sshArgv(t, ts, k, kh2, []string{"-T"}, "twinbox serve -u alice"), "")
	if code != 255 || !strings.Contains(errs, "HOST IDENTIFICATION HAS CHANGED") {
		t.Fatalf("wrong host key: exit %d, stderr %q", code, errs)
	}
	if n := ts.served.Load(); n != served {
		t.Fatalf("Serve ran %d times for refused requests", n-served)
	}

	// A pty forced with -tt is declined (OpenSSH then gives up). Last:
	// OpenSSH sends its exec request without waiting for the pty reply,
	// and the server may still start that session after the client gave
	// up, so a Serve count taken after this would race with it (the count
	// above once saw such a late Serve under load).
	out, errs, code = runSSH(t, sshArgv(t, ts, k, kh, []string{"-tt"}, "twinbox serve -u alice"), "x\n")
	if code == 0 || out != "" || !strings.Contains(errs, "PTY allocation request failed") {
		t.Fatalf("ssh -tt: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	ts.log.wait(t, "refused", "reason", "pty request not allowed", "fingerprint", k.fp)
}

func mustRead(t testing.TB, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fields(s string) []string { return strings.Fields(s) }

func TestOpenSSHPortForwardingRefused(t *testing.T) {
	opensshClient(t)
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}})
	kh := knownHostsFor(t, ts, d)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()

	// Remote forwarding: refused, ssh exits with ExitOnForwardFailure.
	_, errs, code := runSSH(t, sshArgv(t, ts, k, kh, []string{"-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:" + target.Addr().String()}), "")
	if code != 255 || !strings.Contains(errs, "remote port forwarding failed") {
		t.Fatalf("ssh -R: exit %d, stderr %q", code, errs)
	}
	ts.log.wait(t, "refused", "reason", "remote port forwarding (tcpip-forward) not allowed", "fingerprint", k.fp)

	// Local forwarding: ssh listens locally; a connection through it makes
	// ssh open a direct-tcpip channel, which the server refuses.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lport := free.Addr().(*net.TCPAddr).Port
	free.Close()
	argv := sshArgv(t, ts, k, kh, []string{"-N", "-o", "ExitOnForwardFailure=yes", "-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, target.Addr())})
	cmd := exec.Command(argv[0], argv[1:]...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var conn net.Conn
	for i := 0; ; i++ {
		conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", lport))
		if err == nil {
			break
		}
		if i == 600 {
			t.Fatalf("ssh -L never listened: %v; stderr %q", err, errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	conn.Close()
	if n != 0 || err != nil {
		t.Fatalf("forwarded connection: %d bytes, %v", n, err)
	}
	ts.log.wait(t, "refused", "reason", "port forwarding (direct-tcpip) not allowed", "fingerprint", k.fp)
	select {
	case <-accepted:
		t.Fatal("the forwarding target got a connection")
	default:
	}
}

// A real sync with OpenSSH's client as the transport (the way `remote:`
// reaches a peer), against the embedded server.
func TestOpenSSHSync(t *testing.T) {
	opensshClient(t)
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}, serve: syncServe(map[string]string{"alice": remote}, nil)})
	kh := knownHostsFor(t, ts, d)
	for i := 0; i < 10; i++ {
		testmail.Deliver(t, local, "INBOX", fmt.Sprintf("local %d", i))
		testmail.Deliver(t, remote, "Sent", fmt.Sprintf("remote %d", i))
	}
	ctx := context.Background()
	rl, err := index.Open(ctx, maildir.Location{Root: local}, index.Options{User: "alice", LockTimeout: 10 * time.Second, ReplicaID: "client"})
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	rwc, err := transport.Command(ctx, sshArgv(t, ts, k, kh, []string{"-T"}, "twinbox serve -u alice"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := wire.Dial(ctx, rwc, "alice", rl.Info())
	if err != nil {
		rwc.Close()
		t.Fatal(err)
	}
	sum, err := session.Run(ctx, rl, cl, session.Options{})
	if cerr := cl.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("sync through OpenSSH: %v", err)
	}
	if got := sum.ResultA.Fetched + sum.ResultB.Fetched; got != 20 {
		t.Errorf("fetched %d bodies, want 20", got)
	}
	rl.Close()
	testmail.Converged(t, local, remote)
	ts.log.wait(t, "session ended", "user", "alice", "fingerprint", k.fp)
}
