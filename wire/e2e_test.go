package wire_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/wire"
)

// wireSync is one sync of the local replica at local with the replica at
// remote, the latter served by wire.Serve over a transport.Pipe. With
// remoteFirst the wire client is the session's side A.
type wireSync struct {
	sum        *session.Summary
	roundTrips int
	bytesIn    int64 // what the client received
	bytesOut   int64
}

func syncOverWire(t *testing.T, local, remote string, remoteFirst bool) wireSync {
	t.Helper()
	ctx := context.Background()
	rl, err := index.Open(ctx, maildir.Location{Root: local}, index.Options{User: "carol", LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	srv := startServer(t, ctx, maildir.Location{Root: remote})
	cl, err := wire.Dial(ctx, srv.conn, "carol", rl.Info())
	if err != nil {
		t.Fatal(err)
	}
	var a, b replica.Replica = rl, cl
	if remoteFirst {
		a, b = cl, rl
	}
	sum, err := session.Run(ctx, a, b, session.Options{})
	if err != nil {
		cl.Close()
		t.Fatalf("sync over the wire: %v", err)
	}
	if sum.Changed {
		t.Fatalf("sync reported changes during the sync: %v %v", sum.ResultA.Skipped, sum.ResultB.Skipped)
	}
	ws := wireSync{sum: sum, roundTrips: cl.RoundTrips}
	_, _, ws.bytesIn, ws.bytesOut = cl.Counters()
	if err := cl.Close(); err != nil {
		t.Fatalf("closing the client: %v", err)
	}
	if err := srv.wait(t); err != nil {
		t.Fatalf("server: %v", err)
	}
	return ws
}

// work counts what both sides of a sync did.
func work(s *session.Summary) string {
	var parts []string
	for _, r := range []*replica.ApplyResult{s.ResultA, s.ResultB} {
		if r == nil {
			continue
		}
		n := r.Added + r.Linked + r.Fetched + r.Expunged + r.Flagged + r.Moved + r.MailboxOps
		if n != 0 || r.Bytes != 0 {
			parts = append(parts, fmt.Sprintf("%+v", *r))
		}
	}
	return strings.Join(parts, "; ")
}

func TestSyncOverWire(t *testing.T) {
	for _, remoteFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("remoteFirst=%v", remoteFirst), func(t *testing.T) {
			d := t.TempDir()
			a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
			var seen []string
			for i := 0; i < 5; i++ {
				seen = append(seen, testmail.Deliver(t, a, "INBOX", strings.Repeat("a", i*1000)))
			}
			testmail.Deliver(t, a, "Work", "work")
			testmail.Deliver(t, a, "Work", strings.Repeat("big body line\r\n", 40000)) // > MaxFrame
			for i := 0; i < 3; i++ {
				testmail.Deliver(t, b, "INBOX", "b")
			}
			testmail.Deliver(t, b, "Lists/Go", "go")
			testmail.SetFlags(t, a, "INBOX", seen[0], "S")
			testmail.SetFlags(t, a, "INBOX", seen[1], "FS")

			first := syncOverWire(t, a, b, remoteFirst)
			if first.sum.ResultA.Fetched+first.sum.ResultB.Fetched != 7+4 {
				t.Errorf("first sync fetched %d+%d bodies, want 11", first.sum.ResultA.Fetched, first.sum.ResultB.Fetched)
			}
			if d := testmail.Check(t, a, b); len(d) > 0 {
				t.Fatalf("replicas differ after a sync over the wire:\n%s", strings.Join(d, "\n"))
			}
			if got := testmail.Flags(t, b, "INBOX", seen[1]); got != "FS" {
				t.Errorf("flags on the remote side: %q", got)
			}

			// A second sync transfers nothing and changes no file.
			before := fmt.Sprint(snapshot(t, a, notIndex, false), snapshot(t, b, notIndex, false))
			second := syncOverWire(t, a, b, remoteFirst)
			if w := work(second.sum); w != "" {
				t.Errorf("second sync did work: %s", w)
			}
			if second.sum.Full != 0 {
				t.Errorf("second sync compared %d mailboxes in full", second.sum.Full)
			}
			if after := fmt.Sprint(snapshot(t, a, notIndex, false), snapshot(t, b, notIndex, false)); after != before {
				t.Errorf("second sync changed files")
			}
			if d := testmail.Check(t, a, b); len(d) > 0 {
				t.Fatalf("replicas differ after the second sync:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

// The number of round trips of a sync does not depend on the mailbox size,
// and a sync with nothing to do costs the same bytes at any size.
func TestRoundTripsBounded(t *testing.T) {
	sizes := []int{10, 2000}
	var first, idle []wireSync
	for _, n := range sizes {
		d := t.TempDir()
		a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
		for i := 0; i < n; i++ {
			testmail.Deliver(t, a, "INBOX", "m")
		}
		for i := 0; i < n/10; i++ {
			testmail.Deliver(t, b, "INBOX", "from b")
		}
		f := syncOverWire(t, a, b, false)
		if got := f.sum.ResultA.Fetched + f.sum.ResultB.Fetched; got != n+n/10 {
			t.Fatalf("%d messages: first sync fetched %d bodies", n, got)
		}
		testmail.Converged(t, a, b)
		s := syncOverWire(t, a, b, false)
		if w := work(s.sum); w != "" {
			t.Errorf("%d messages: the idle sync did work: %s", n, w)
		}
		first = append(first, f)
		idle = append(idle, s)
		t.Logf("%d messages: first sync %d round trips %d/%d bytes in/out; idle sync %d round trips %d/%d bytes",
			n, f.roundTrips, f.bytesIn, f.bytesOut, s.roundTrips, s.bytesIn, s.bytesOut)
	}
	if idle[0].roundTrips != idle[1].roundTrips {
		t.Errorf("idle sync: %d round trips at %d messages, %d at %d", idle[0].roundTrips, sizes[0], idle[1].roundTrips, sizes[1])
	}
	if idle[0].roundTrips > 6 {
		t.Errorf("idle sync took %d round trips", idle[0].roundTrips)
	}
	if first[0].roundTrips != first[1].roundTrips {
		t.Errorf("first sync: %d round trips at %d messages, %d at %d", first[0].roundTrips, sizes[0], first[1].roundTrips, sizes[1])
	}
	// Incremental: the idle sync's traffic does not grow with the mailbox
	// (a few digits of counters aside).
	if in, out := idle[1].bytesIn-idle[0].bytesIn, idle[1].bytesOut-idle[0].bytesOut; in > 256 || out > 256 {
		t.Errorf("idle sync of %d messages moved %d/%d more bytes than of %d", sizes[1], in, out, sizes[0])
	}
}

func TestOpenerErrorReachesClient(t *testing.T) {
	ctx := context.Background()
	ce, se, err := transport.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ce.Close()
	done := make(chan error, 1)
	go func() {
		done <- wire.Serve(ctx, se, func(ctx context.Context, user string, peer replica.Info) (replica.Replica, error) {
			return nil, fmt.Errorf("no replica for user %q (peer %s)", user, peer.ReplicaID)
		}, nil)
		se.Close()
	}()
	_, err = wire.Dial(ctx, ce, "mallory", replica.Info{ReplicaID: "client-1"})
	want := `peer refused: no replica for user "mallory" (peer client-1)`
	if err == nil || err.Error() != want {
		t.Fatalf("Dial: %v, want %q", err, want)
	}
	if serr := <-done; serr == nil || !strings.Contains(serr.Error(), `no replica for user "mallory"`) {
		t.Errorf("Serve: %v", serr)
	}

	// The same through transport.ServeInProcess.
	conn, wait, err := transport.ServeInProcess(ctx, &wire.Server{Open: func(ctx context.Context, user string, peer replica.Info) (replica.Replica, error) {
		return nil, errors.New("locked by another sync")
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = wire.Dial(ctx, conn, "mallory", replica.Info{ReplicaID: "c"})
	conn.Close()
	if err == nil || !strings.Contains(err.Error(), "locked by another sync") {
		t.Errorf("ServeInProcess: %v", err)
	}
	if werr := wait(); werr == nil || !strings.Contains(werr.Error(), "locked by another sync") {
		t.Errorf("ServeInProcess server: %v", werr)
	}
}

// fetchHook is a replica whose Fetch (the peer pulling bodies) first runs
// hook.
type fetchHook struct {
	replica.Replica
	hook func()
}

func (f *fetchHook) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	f.hook()
	return f.Replica.Fetch(ctx, refs, fn)
}

// A mailbox that a remote apply creates shows, while its bodies are pulled,
// a NEXTUID at the lowest UID the plan adds to it, although the plan
// crosses the wire without its adds (the server pulls them mailbox by
// mailbox): a Dovecot reading the new uidlist before the adds must see no
// NEXTUID above them (issue 3: "Expunged message reappeared"), and UIDs
// below them that the peer used stay used.
func TestRemoteCreateStartsAtLowestAdd(t *testing.T) {
	d := t.TempDir()
	a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
	testmail.Deliver(t, a, "INBOX", "x")
	syncOverWire(t, a, b, false)
	gone := testmail.Deliver(t, a, "S1", "expunged before the sync")
	testmail.Deliver(t, a, "S1", "two")
	testmail.Deliver(t, a, "S1", "three")
	// A's scan (a sync with a scratch replica) gives S1's messages UIDs
	// 1, 2, 3; then UID 1 is expunged.
	testmail.Sync(t, a, filepath.Join(d, "scratch"), session.Options{})
	testmail.Expunge(t, a, "S1", gone)

	ctx := context.Background()
	rl, err := index.Open(ctx, maildir.Location{Root: a}, index.Options{User: "carol", LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, ctx, maildir.Location{Root: b})
	cl, err := wire.Dial(ctx, srv.conn, "carol", rl.Info())
	if err != nil {
		t.Fatal(err)
	}
	var seen []uint32
	hook := func() {
		if ul, _, err := maildir.ReadUidlist(testmail.Dir(t, b, "S1")); err == nil {
			seen = append(seen, ul.NextUID)
		}
	}
	sum, err := session.Run(ctx, &fetchHook{rl, hook}, cl, session.Options{})
	rl.Close()
	if err != nil {
		cl.Close()
		t.Fatal(err)
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.wait(t); err != nil {
		t.Fatal(err)
	}
	if sum.Changed {
		t.Fatalf("changed during the sync: %v %v", sum.ResultA.Skipped, sum.ResultB.Skipped)
	}
	if fmt.Sprint(seen) != "[2]" {
		t.Fatalf("B's new S1 showed NEXTUID %v while its bodies were pulled, want [2] (its adds are UIDs 2 and 3)", seen)
	}
	if d := testmail.Check(t, a, b); len(d) > 0 {
		t.Fatalf("replicas differ:\n%s", strings.Join(d, "\n"))
	}
}
