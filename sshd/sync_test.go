package sshd_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/wire"
)

// syncServe is the Serve callback of a real server: the wire protocol over
// the session, on the replica of the user the key was allowed, under
// roots (one mail root per user). The hello must name the same user.
func syncServe(roots map[string]string, log *slog.Logger) func(ctx context.Context, user string, rw io.ReadWriter) error {
	return func(ctx context.Context, user string, rw io.ReadWriter) error {
		open := func(ctx context.Context, u string, peer replica.Info) (replica.Replica, error) {
			if u != user {
				return nil, fmt.Errorf("this session may sync %q only, not %q", user, u)
			}
			root, ok := roots[u]
			if !ok {
				return nil, fmt.Errorf("unknown user %q", u)
			}
			return index.Open(ctx, maildir.Location{Root: root}, index.Options{User: u, LockTimeout: 10 * time.Second, ReplicaID: "server-" + u})
		}
		return wire.Serve(ctx, rw, open, log)
	}
}

// knownHostsFor writes a known_hosts file holding ts's host key.
func knownHostsFor(t testing.TB, ts *testServer, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{ts.addr}, ts.HostKey())
	if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// syncSSH runs one sync of the local root with user's replica on ts,
// through transport.SSH.
func syncSSH(t testing.TB, ts *testServer, key clientKey, kh, local, user string) (*session.Summary, error) {
	t.Helper()
	ctx := context.Background()
	rl, err := index.Open(ctx, maildir.Location{Root: local}, index.Options{User: user, LockTimeout: 10 * time.Second, ReplicaID: "client-" + user})
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	o, err := transport.ParseSSHURL("ssh://vmail@" + ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	o.User, o.IdentityFiles, o.KnownHostsFiles = user, []string{key.file}, []string{kh}
	rwc, err := transport.SSH(ctx, o)
	if err != nil {
		return nil, err
	}
	cl, err := wire.Dial(ctx, rwc, user, rl.Info())
	if err != nil {
		rwc.Close()
		return nil, err
	}
	sum, err := session.Run(ctx, rl, cl, session.Options{})
	cerr := cl.Close()
	if err == nil {
		err = cerr
	}
	return sum, err
}

// A real sync over ssh://: two real replicas, the wire protocol through
// the embedded server and the built-in client.
func TestSyncOverSSH(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}, serve: syncServe(map[string]string{"alice": remote}, nil)})
	kh := knownHostsFor(t, ts, d)

	for i := 0; i < 20; i++ {
		testmail.Deliver(t, local, "INBOX", fmt.Sprintf("local %d %s", i, strings.Repeat("x", i*300)))
	}
	big := testmail.Deliver(t, local, "Archive", strings.Repeat("a big body line\r\n", 100000)) // a few MiB
	for i := 0; i < 5; i++ {
		testmail.Deliver(t, remote, "INBOX", fmt.Sprintf("remote %d", i))
	}
	testmail.SetFlags(t, local, "Archive", big, "FS")

	sum, err := syncSSH(t, ts, k, kh, local, "alice")
	if err != nil {
		t.Fatalf("sync over ssh: %v", err)
	}
	if got := sum.ResultA.Fetched + sum.ResultB.Fetched; got != 26 {
		t.Errorf("first sync fetched %d bodies, want 26", got)
	}
	testmail.Converged(t, local, remote)
	if f := testmail.Flags(t, remote, "Archive", big); f != "FS" {
		t.Errorf("flags on the remote side %q", f)
	}
	ts.log.wait(t, "session ended", "user", "alice", "fingerprint", k.fp)

	// Changes on both sides, a second sync.
	testmail.Deliver(t, remote, "Work", "new on the remote")
	testmail.SetFlags(t, remote, "Archive", big, "S")
	if _, err := syncSSH(t, ts, k, kh, local, "alice"); err != nil {
		t.Fatalf("second sync: %v", err)
	}
	testmail.Converged(t, local, remote)
	if f := testmail.Flags(t, local, "Archive", big); f != "S" {
		t.Errorf("flags on the local side %q", f)
	}

	// The key may sync alice only: asking for bob over the same transport
	// fails with the server's reason.
	_, err = syncSSH(t, ts, k, kh, local, "bob")
	if err == nil || !strings.Contains(err.Error(), `user "bob" not allowed by users="alice"`) {
		t.Fatalf("bob: %v", err)
	}
}

// A hello for another user than the one the session was allowed is
// refused by the Serve callback (the callback's duty; this is the shape
// the CLI's callback must keep).
func TestHelloUserMustMatch(t *testing.T) {
	d := t.TempDir()
	k := newClientKey(t, d, "k")
	ts := startServer(t, serverOpts{authorized: []string{`users="alice" ` + k.line}, serve: syncServe(map[string]string{"alice": filepath.Join(d, "a"), "bob": filepath.Join(d, "b")}, nil)})
	kh := knownHostsFor(t, ts, d)
	ctx := context.Background()
	rwc, err := transport.SSH(ctx, transport.SSHOptions{Addr: ts.addr, User: "alice", IdentityFiles: []string{k.file}, KnownHostsFiles: []string{kh}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = wire.Dial(ctx, rwc, "bob", replica.Info{ReplicaID: "x"})
	if err == nil || !strings.Contains(err.Error(), `may sync "alice" only`) {
		t.Fatalf("hello for bob in alice's session: %v", err)
	}
}
