package tcp

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// fillPair gives two roots different mail, flags and folders.
func fillPair(t *testing.T, a, b string) (flagged string) {
	t.Helper()
	var seen []string
	for i := 0; i < 6; i++ {
		seen = append(seen, testmail.Deliver(t, a, "INBOX", strings.Repeat("a", i*700)))
	}
	testmail.Deliver(t, a, "Work", strings.Repeat("big body line\r\n", 30000)) // several records, > wire.MaxFrame
	for i := 0; i < 4; i++ {
		testmail.Deliver(t, b, "INBOX", "from b")
	}
	testmail.Deliver(t, b, "Lists/Go", "go")
	testmail.SetFlags(t, a, "INBOX", seen[0], "S")
	testmail.SetFlags(t, a, "INBOX", seen[1], "FS")
	return seen[1]
}

// A real sync over tcp: (AEAD record layer) and over tcps: (TLS 1.3, with
// and without client certificates): both replicas converge, and the
// second sync over the same transport does nothing.
func TestSyncEndToEnd(t *testing.T) {
	p := newPKI(t)
	cases := []struct {
		name       string
		serverTLS  func(t *testing.T) *Listener
		clientOpts func(s *testServer, o *Options)
	}{
		{"tcp", func(t *testing.T) *Listener { return &Listener{} }, func(s *testServer, o *Options) {}},
		{"tcps", func(t *testing.T) *Listener { return &Listener{TLS: p.serverTLS(t, false)} }, func(s *testServer, o *Options) {
			o.Addr = localAddr(s.addr)
			o.TLS = p.clientTLS(t, false)
		}},
		{"tcps-client-cert", func(t *testing.T) *Listener { return &Listener{TLS: p.serverTLS(t, true)} }, func(s *testServer, o *Options) {
			o.Addr = localAddr(s.addr)
			o.TLS = p.clientTLS(t, true)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
			flagged := fillPair(t, local, remote)
			l := c.serverTLS(t)
			l.Secrets = []Secret{
				{Name: "other", Key: keyB, Users: []string{"alice"}},
				{Name: "mx1", Key: keyA, Users: []string{"carol", "*@example.org"}},
			}
			s := startServer(t, l, roots{"carol": remote})
			o := s.opts("carol", "mx1", keyA)
			c.clientOpts(s, &o)
			sum, err := dialSync(t, o, local)
			if err != nil {
				t.Fatalf("sync over %s: %v", c.name, err)
			}
			if got := sum.ResultA.Fetched + sum.ResultB.Fetched; got != 12 {
				t.Errorf("first sync fetched %d bodies, want 12", got)
			}
			testmail.Converged(t, local, remote)
			if got := testmail.Flags(t, remote, "INBOX", flagged); got != "FS" {
				t.Errorf("flags on the server's copy: %q, want FS", got)
			}
			before := testmail.Snapshot(local) + testmail.Snapshot(remote)
			sum, err = dialSync(t, o, local)
			if err != nil {
				t.Fatalf("second sync over %s: %v", c.name, err)
			}
			if n := sum.ResultA.Fetched + sum.ResultB.Fetched; n != 0 {
				t.Errorf("second sync fetched %d bodies", n)
			}
			if after := testmail.Snapshot(local) + testmail.Snapshot(remote); after != before {
				t.Errorf("second sync changed files")
			}
			if n := s.handled.Load(); n != 2 {
				t.Errorf("%d sessions handled, want 2", n)
			}
			s.wantLog("tcp: accepted", "user=carol", "secret=mx1", "remote=127.0.0.1:", fmt.Sprintf("tls=%v", c.name != "tcp"))
			s.wantLog("tcp: session ended", "user=carol")
		})
	}
}

// A user that a wildcard pattern allows syncs too.
func TestSyncPatternUser(t *testing.T) {
	d := t.TempDir()
	local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
	testmail.Deliver(t, local, "INBOX", "hello")
	s := startServer(t, &Listener{Secrets: []Secret{{Name: "mx1", Key: keyA, Users: []string{"?ob@example.*"}}}}, roots{"bob@example.org": remote})
	if _, err := dialSync(t, s.opts("bob@example.org", "mx1", keyA), local); err != nil {
		t.Fatal(err)
	}
	testmail.Converged(t, local, remote)
	_, err := Dial(context.Background(), s.opts("bobby@example.org", "mx1", keyA))
	wantRefused(t, err, msgNotPermitted)
	s.wantLog("tcp: refused", "user=bobby@example.org", "does not permit")
}
