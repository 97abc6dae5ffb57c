package session_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestChangeInTheTickOfAStampIsSeen: a file system stamps a change with a
// coarse clock (Linux: the last timer tick; on tmpfs two changes of one
// directory 0.1 ms apart mostly get one mtime), so Dovecot's expunge right
// after twinbox read cur/'s mtime can leave that mtime as it was. Found by
// the property test (class 3, seed 7543627580053342209, failing in about
// one replay in two on /dev/shm): an apply renamed a file in A's INBOX
// cur/ (a flag change) and recorded cur/'s mtime; Dovecot then expunged
// another message from cur/ in the same tick; every later scan took INBOX
// for unchanged, A's index kept the message alive without its file ("message
// to send is gone") and the replicas never converged. The index now
// marks an mtime too recent to vouch for the directory racy (cb08aad,
// Stamp.settled), and the next scan reads that directory again.
//
// Both ways a stamp is recorded: by the apply after its writes in the
// mailbox ("apply"), and by the scan before its listing ("scan"). The
// coarse clock is played deterministically: cur/'s mtime is set to a time
// not older than the read that records it (a time ahead, where a coarse
// clock gives the time of the tick the read falls in), and set back to
// that value after Dovecot's expunge (the expunge fell into that tick).
// Both fail without the fix: the expunge never reaches B.
//
// "late-apply": the scan's stamp of cur/ is racy and Dovecot expunges in
// its tick, right after the scan; the apply adds B's new message to A's
// INBOX (new/ only) more than the racy window after that tick. The apply
// compares the raw stamp (clean: cur/'s mtime is as the scan read it) and
// keeps the stamp it takes after its writes; cur/'s mtime is old enough
// by then to look trustworthy, and the next scans read only new/: the
// expunge was lost for good (on main cb08aad). The apply keeps the racy
// marks of the stamp it was clean against (applyBox).
func TestChangeInTheTickOfAStampIsSeen(t *testing.T) {
	for _, when := range []string{"apply", "scan", "late-apply"} {
		t.Run(when, func(t *testing.T) { changeInTheTick(t, when) })
	}
}

func changeInTheTick(t *testing.T, when string) {
	a, b := testmail.Roots(t)
	keep := testmail.Deliver(t, a, "INBOX", "kept")
	gone := testmail.Deliver(t, a, "INBOX", "expunged by Dovecot")
	for _, id := range []string{keep, gone} {
		testmail.SetFlags(t, a, "INBOX", id, "") // into cur/, as a client's view moves them
	}
	testmail.Settle(t, a, b)
	cur := filepath.Join(testmail.Dir(t, a, "INBOX"), "cur")
	// The tick the recording read falls in: ahead of every clock here.
	tick := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if when == "late-apply" {
		// Half a second ahead: the scan's stamp is racy (within the
		// index's one-second window of it), and the apply waits until
		// it is not (below).
		tick = time.Now().Add(500 * time.Millisecond).Truncate(time.Millisecond)
	}
	setCur := func() {
		if err := os.Chtimes(cur, tick, tick); err != nil {
			t.Fatal(err)
		}
	}
	// A's INBOX as the index last saw it long ago: the next scan lists it
	// and, finding nothing new, records a settled stamp, so that the
	// apply below finds the index up to date with the mailbox (the path
	// that records a stamp after its writes).
	old := time.Now().Add(-time.Hour)
	for _, sub := range []string{"cur", "new"} {
		if err := os.Chtimes(filepath.Join(testmail.Dir(t, a, "INBOX"), sub), old, old); err != nil {
			t.Fatal(err)
		}
	}
	var opts index.Options
	switch when {
	case "apply":
		// B sets a flag: A's apply renames a file in cur/, and cur/'s
		// mtime it then reads is in the tick.
		testmail.SetFlags(t, b, "INBOX", keep, "S")
		opts.BeforeBoxCommit = func(dir string, _ bool) {
			if filepath.Join(dir, "cur") == cur {
				setCur()
			}
		}
	case "scan":
		// A's scan lists INBOX (cur/ changed) and reads its mtime in the
		// tick; the sync has nothing to do in INBOX.
		setCur()
	case "late-apply":
		// As "scan", and B's new message comes to A's INBOX (new/) once
		// cur/'s mtime is more than the racy window (1 s) old. (The wait
		// is no timed assertion: a slow machine waits no shorter.)
		setCur()
		testmail.Deliver(t, b, "INBOX", "new on B")
		inbox := testmail.Dir(t, a, "INBOX")
		opts.BeforeApplyBox = func(dir string) {
			if filepath.Clean(dir) == filepath.Clean(inbox) {
				time.Sleep(time.Until(tick.Add(1100 * time.Millisecond)))
			}
		}
	}
	ctx := context.Background()
	ra, err := index.Open(ctx, testmail.Loc(a), index.Options{LockTimeout: 10 * time.Second, BeforeBoxCommit: opts.BeforeBoxCommit, BeforeApplyBox: opts.BeforeApplyBox})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := index.Open(ctx, testmail.Loc(b), index.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		ra.Close()
		t.Fatal(err)
	}
	var wa replica.Replica = ra
	if when != "apply" {
		wa = &afterBegin{ra, func() { expungeInTick(t, a, gone, setCur) }}
	}
	sum, err := session.Run(ctx, wa, rb, session.Options{})
	ra.Close()
	rb.Close()
	if err != nil {
		t.Fatal(err)
	}
	if when == "apply" {
		if sum.ResultA.Flagged == 0 {
			t.Fatalf("A's apply changed no flag: %+v", sum.ResultA)
		}
		expungeInTick(t, a, gone, setCur)
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 4)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "INBOX"); slices.Contains(got, gone) || !slices.Contains(got, keep) {
			t.Errorf("%s's INBOX holds %v: want %s, not %s (Dovecot expunged it on A)", r, got, keep, gone)
		}
	}
	testmail.Converged(t, a, b)
}

// expungeInTick is Dovecot's expunge of message id from A's INBOX, in the
// tick of cur/'s last read (setCur puts cur/'s mtime back to it).
func expungeInTick(t *testing.T, a, id string, setCur func()) {
	t.Helper()
	testmail.Expunge(t, a, "INBOX", id)
	setCur()
}
