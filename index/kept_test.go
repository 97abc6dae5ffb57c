package index_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// keptRecords returns the UIDs of a mailbox's uidlist records that have no
// file (expunged messages' records), in order.
func keptRecords(t *testing.T, root, mailbox string) []uint32 {
	t.Helper()
	live := testmail.UIDs(t, root, mailbox)
	var out []uint32
	for u := range testmail.Records(t, root, mailbox) {
		if _, ok := live[u]; !ok {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

// rewriteUidlist writes a mailbox's uidlist again, unchanged (as Dovecot
// may): the next scan reads the mailbox in full.
func rewriteUidlist(t *testing.T, root, mailbox string) {
	t.Helper()
	if err := maildir.WriteUidlist(testmail.Dir(t, root, mailbox), testmail.Uidlist(t, root, mailbox)); err != nil {
		t.Fatal(err)
	}
}

// countListings counts the listings of mailbox directories under root
// during f.
func countListings(t *testing.T, root string, f func()) int {
	t.Helper()
	n := 0
	restore := index.SetTestHookBetweenListings(func(dir string) {
		if strings.HasPrefix(dir, root) {
			n++
		}
	})
	defer restore()
	f()
	return n
}

// TestSyncedExpungeKeepsTheRecord: an expunge that a sync applies leaves
// the message's uidlist record without its file, as Dovecot's own expunge
// does (a COPY back of the message then gets a new name:
// integration/imap TestCopyBackAfterSyncedExpungeGetsANewName). That
// record stands for no message: the replicas agree, nothing is sent again,
// and a full scan of the mailbox reads its directories once. A record
// whose file vanished since the last scan still makes the scan read them
// twice (the file may be in mid-move) and replicates as an expunge.
func TestSyncedExpungeKeepsTheRecord(t *testing.T) {
	// What the scan reads right after a sync (racyWindow re-reads the
	// directories that sync just wrote): as if the file clock had moved on.
	defer index.SetTestRacyWindow(0)()
	a, b := roots(t)
	var ms []string
	for i := range 8 {
		ms = append(ms, testmail.Deliver(t, a, "Box", fmt.Sprint("m", i)))
	}
	settle(t, a, b)
	uid0 := uidOfBase(t, a, "Box", ms[0])
	testmail.Expunge(t, b, "Box", ms[0])
	settle(t, a, b) // (Converged and idle)
	for _, r := range []string{a, b} {
		if got := keptRecords(t, r, "Box"); !slices.Equal(got, []uint32{uid0}) {
			t.Fatalf("%s: records without a file %v; want [%d] (the expunged message's)", r, got, uid0)
		}
		if testmail.Find(t, r, "Box", ms[0]) != "" {
			t.Fatalf("%s: the expunged message is back", r)
		}
	}

	// A full scan (Dovecot rewrote the uidlist) reads Box once: the kept
	// record is no file in mid-move.
	rewriteUidlist(t, a, "Box")
	n := countListings(t, a, func() {
		if s := testmail.Sync(t, a, b, session.Options{}); s.ResultA.Added+s.ResultB.Added+s.ResultA.Expunged+s.ResultB.Expunged != 0 {
			t.Fatalf("a sync after a uidlist rewrite did something: A=%+v B=%+v", s.ResultA, s.ResultB)
		}
	})
	if n != 1 {
		t.Fatalf("the full scan of A's Box listed it %d times; want 1", n)
	}

	// A file that vanished since the last scan: the record is one the
	// index holds live, the scan reads the directories again, and the
	// expunge replicates.
	testmail.Expunge(t, a, "Box", ms[1])
	rewriteUidlist(t, a, "Box")
	n = countListings(t, a, func() { testmail.Sync(t, a, b, session.Options{}) })
	if n < 2 {
		t.Fatalf("the full scan after an expunge listed A's Box %d times; want a second reading", n)
	}
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if testmail.Find(t, r, "Box", ms[1]) != "" {
			t.Fatalf("%s: the expunge of %s did not replicate", r, ms[1])
		}
		if got := len(testmail.UIDs(t, r, "Box")); got != 6 {
			t.Fatalf("%s: Box holds %d messages; want 6", r, got)
		}
	}
}

// TestKeptRecordsDroppedAsDovecotDoes: Dovecot recreates the uidlist
// without the expunged messages' records once at least a quarter of its
// records have no file, and keeps them below that. The apply's rewrite does
// the same, except for the records of its own expunges (they stay until a
// later rewrite).
func TestKeptRecordsDroppedAsDovecotDoes(t *testing.T) {
	a, b := roots(t)
	var ms []string
	for i := range 8 {
		ms = append(ms, testmail.Deliver(t, a, "Box", fmt.Sprint("m", i)))
	}
	settle(t, a, b)
	uid := func(m string) uint32 { return uidOfBase(t, a, "Box", m) }
	u0, u1 := uid(ms[0]), uid(ms[1])

	// 1 of 8 without a file: kept.
	testmail.Expunge(t, b, "Box", ms[0])
	settle(t, a, b)
	if got := keptRecords(t, a, "Box"); !slices.Equal(got, []uint32{u0}) {
		t.Fatalf("A: records without a file %v; want [%d]", got, u0)
	}
	// 2 of 8: the apply's rewrite drops the older one, keeps its own.
	testmail.Expunge(t, b, "Box", ms[1])
	settle(t, a, b)
	if got := keptRecords(t, a, "Box"); !slices.Equal(got, []uint32{u1}) {
		t.Fatalf("A: records without a file %v; want [%d] (the older one dropped at a quarter)", got, u1)
	}
	if n := len(testmail.Records(t, a, "Box")); n != 7 {
		t.Fatalf("A: %d records; want 7", n)
	}
	testmail.Converged(t, a, b)
}
