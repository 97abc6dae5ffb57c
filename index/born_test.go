package index_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"context"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// An apply killed after it linked an add and wrote the uidlist, before the
// index recorded it: the next scan finds the message listed without a
// record. It must keep the Born the add carried (journaled before the
// link), not be stamped born now: the expunge of that instance would then
// carry the later stamp and kill a copy that a client put back on another
// replica in between (docs/design.md §9 item 9).
//
// B and C hold M in INBOX; A gets it from B in a sync killed before A's
// index commit. C expunges M, B applies that, and a client on B puts M
// back into INBOX (a new instance, born later). Then A scans, and a client
// on A expunges its M (the old instance), and A syncs with B: B's put-back
// copy must survive everywhere.
func TestKilledApplyKeepsTheAddsBorn(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	m := testmail.Deliver(t, b, "INBOX", "M")
	sync2(t, b, c)
	killed := false
	restore := index.SetTestHookBeforeBoxCommit(func(string) { killed = true; panic("killed") })
	func() {
		defer func() { _ = recover() }()
		_, _ = testmail.TrySync(a, b, session.Options{})
	}()
	restore()
	if !killed {
		t.Fatal("the hook did not stop A's apply")
	}
	if !slices.Contains(testmail.Files(t, a, "INBOX"), m) || testmail.UIDs(t, a, "INBOX")[1] == "" {
		t.Fatalf("A's killed apply did not link and list M: files %v, uidlist %v", testmail.Files(t, a, "INBOX"), testmail.UIDs(t, a, "INBOX"))
	}
	// B's client copies M to Keep; C expunges M, and B applies that.
	keep := testmail.Dir(t, b, "Keep")
	if err := maildir.CreateMailboxDirs(keep); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(testmail.Find(t, b, "INBOX", m), filepath.Join(keep, "cur", m+":2,")); err != nil {
		t.Fatal(err)
	}
	testmail.Expunge(t, c, "INBOX", m)
	sync2(t, b, c)
	if slices.Contains(testmail.Files(t, b, "INBOX"), m) {
		t.Fatal("B did not apply C's expunge")
	}
	// B's client moves M back from Keep into INBOX: born after the expunge.
	p := testmail.Find(t, b, "Keep", m)
	if err := os.Link(p, filepath.Join(testmail.Dir(t, b, "INBOX"), "cur", filepath.Base(p))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	scan(t, b)
	// A's next scan finds M listed without a record; then a client on A
	// expunges it (A has not heard of C's expunge): the tombstone takes
	// the Born of A's record.
	scan(t, a)
	testmail.Expunge(t, a, "INBOX", m)
	sync2(t, a, b) // B's put-back copy must stay
	sync2(t, a, c)
	for i := 0; i < 2; i++ {
		sync2(t, a, b)
		sync2(t, b, c)
		sync2(t, c, a)
	}
	testmail.Converged(t, a, b)
	testmail.Converged(t, b, c)
	assertIdle(t, a, b)
	assertIdle(t, b, c)
	assertIdle(t, a, c)
	for _, r := range []string{a, b, c} {
		if !slices.Contains(testmail.Files(t, r, "INBOX"), m) {
			t.Errorf("%s: the copy put back into INBOX is lost", r)
		}
	}
}

// scan brings a replica's index up to date with its disk.
func scan(t *testing.T, root string) {
	t.Helper()
	r, err := index.Open(context.Background(), maildir.Location{Root: root}, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// An apply killed after its uidlist gave an add its UID, before the index
// recorded it: when that uidlist is lost before the next scan (the folder
// removed and made again by a delivery), the scan restores it from the
// index, and the index's UIDNEXT is below that UID. The journal of the
// apply's adds keeps the UIDNEXT they reached: the restored uidlist never
// gives the UID to another message (contract §3.1; found by
// TestPropertyKilledApplies, seed 5810530049250559741).
func TestKilledApplyUIDNotGivenAgain(t *testing.T) {
	a, b := roots(t)
	m1 := testmail.Deliver(t, b, "Work", "M1")
	restore := index.SetTestHookBeforeBoxCommit(func(dir string) {
		if filepath.Base(dir) == ".Work" {
			panic("killed")
		}
	})
	func() {
		defer func() { _ = recover() }()
		_, _ = testmail.TrySync(a, b, session.Options{})
	}()
	restore()
	uids := testmail.UIDs(t, a, "Work")
	var u1 uint32
	for u, g := range uids {
		if g == m1 {
			u1 = u
		}
	}
	if u1 == 0 {
		t.Fatalf("A's killed apply did not list M1 in Work: %v", uids)
	}
	// A's Work is removed and made again by a delivery.
	if err := os.RemoveAll(testmail.Dir(t, a, "Work")); err != nil {
		t.Fatal(err)
	}
	m2 := testmail.Deliver(t, a, "Work", "M2")
	scan(t, a)
	for u, g := range testmail.UIDs(t, a, "Work") {
		if g == m2 && u <= u1 {
			t.Fatalf("M2 got UID %d; the killed apply had given UID %d to M1", u, u1)
		}
	}
	settle(t, a, b)
}
