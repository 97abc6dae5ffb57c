package session_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// dovecotMakes makes a folder with an empty dovecot-uidlist the way a
// Dovecot CREATE does: GUID new, UIDVALIDITY the next value of the root's
// counter.
func dovecotMakes(t *testing.T, root, mailbox string) *maildir.Uidlist {
	t.Helper()
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	v, err := testmail.Loc(root).NextUIDValidity(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	testmail.MakeMailbox(t, root, mailbox, v)
	return testmail.Uidlist(t, root, mailbox)
}

func counter(t *testing.T, root string) uint32 {
	t.Helper()
	v, err := testmail.Loc(root).UIDValidityCounter()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSyncRaisesTheUIDValidityCounter: a mailbox a sync makes on B carries
// A's UIDVALIDITY, which B's counter never handed out; the sync moves B's
// counter past it, so that a folder B's Dovecot makes later, perhaps under
// the same name after a delete, never gets that value again (contract
// §3.1: clients would take their cached UIDs of the first folder for the
// second's).
func TestSyncRaisesTheUIDValidityCounter(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, b, "INBOX", "b's first")
	sync2(t, b, filepath.Join(t.TempDir(), "scratch")) // B's counter starts
	// A's counter runs ahead of B's: A's Dovecot made more folders.
	for _, n := range []string{"F1", "F2", "F3", "F4"} {
		dovecotMakes(t, a, n)
	}
	s2 := dovecotMakes(t, a, "S2")
	testmail.Deliver(t, a, "S2", "in the first S2")
	if counter(t, b) >= s2.UIDValidity {
		t.Fatalf("setup: B's counter %d already at A's S2 %d", counter(t, b), s2.UIDValidity)
	}
	settle(t, a, b)
	if got := testmail.Uidlist(t, b, "S2").UIDValidity; got != s2.UIDValidity {
		t.Fatalf("B's S2 has UIDVALIDITY %d, A's %d", got, s2.UIDValidity)
	}
	if c := counter(t, b); c < s2.UIDValidity {
		t.Fatalf("B's counter %d, below the UIDVALIDITY %d of the S2 the sync made there", c, s2.UIDValidity)
	}
	// S2 deleted on B, and B's Dovecot makes an S2 again.
	testmail.DeleteWithIntent(t, b, "S2")
	settle(t, a, b)
	again := dovecotMakes(t, b, "S2")
	if again.UIDValidity <= s2.UIDValidity {
		t.Fatalf("the S2 made again on B has UIDVALIDITY %d, the deleted one had %d", again.UIDValidity, s2.UIDValidity)
	}
	testmail.Deliver(t, b, "S2", "in the second S2")
	settle(t, a, b)
}

// TestNameAndUIDValidityOfADeletedMailboxGetANewValue: A's Dovecot gives a
// new folder the name and the UIDVALIDITY of a folder B deleted (the two
// hosts' counters handed out one value; or an older twinbox never raised
// them). B's clients may hold UIDs of the deleted folder under that name
// and value: the sync gives the new folder a UIDVALIDITY above everything
// both sides know, on both sides, and keeps its messages and UIDs.
func TestNameAndUIDValidityOfADeletedMailboxGetANewValue(t *testing.T) {
	a, b := roots(t)
	first := dovecotMakes(t, b, "S2")
	old := testmail.Deliver(t, b, "S2", "in the first S2")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, b, "S2")
	settle(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX"}, a, b)

	// A makes S2 again with the deleted one's UIDVALIDITY.
	testmail.MakeMailbox(t, a, "S2", first.UIDValidity)
	msg := testmail.Deliver(t, a, "S2", "in the second S2")
	sync2(t, a, filepath.Join(t.TempDir(), "scratch")) // A's scan gives it UID 1
	before := testmail.UIDs(t, a, "S2")

	s := testmail.Sync(t, a, b, session.Options{})
	if len(s.Revalidated) != 1 {
		t.Fatalf("revalidated %v, want the new S2", s.Revalidated)
	}
	settle(t, a, b)
	va, vb := testmail.Uidlist(t, a, "S2").UIDValidity, testmail.Uidlist(t, b, "S2").UIDValidity
	if va != vb || va <= first.UIDValidity {
		t.Fatalf("S2's UIDVALIDITY: A %d, B %d; the deleted S2 had %d", va, vb, first.UIDValidity)
	}
	for _, r := range []string{a, b} {
		if got := testmail.UIDs(t, r, "S2"); len(got) != 1 || got[1] != before[1] || testmail.Find(t, r, "S2", msg) == "" {
			t.Fatalf("%s: S2 holds %v, want %v (message %s)", r, got, before, msg)
		}
		if c := counter(t, r); c < va {
			t.Fatalf("%s: counter %d below S2's UIDVALIDITY %d", r, c, va)
		}
	}
	for _, f := range testmail.Files(t, b, "S2") {
		if f == old {
			t.Fatalf("the deleted S2's message came back")
		}
	}
}

// TestNewUIDValidityAfterAKilledHalf: the sync that gives a mailbox a new
// UIDVALIDITY stops after one side took it (the other still holds the old
// one): the next sync must not settle on the old, clashing value.
func TestNewUIDValidityAfterAKilledHalf(t *testing.T) {
	a, b := roots(t)
	first := dovecotMakes(t, b, "S2")
	testmail.Deliver(t, b, "S2", "in the first S2")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, b, "S2")
	settle(t, a, b)
	dir := testmail.MakeMailbox(t, a, "S2", first.UIDValidity)
	testmail.Deliver(t, a, "S2", "in the second S2")
	sync2(t, a, b)
	sync2(t, a, b)
	newV := testmail.Uidlist(t, b, "S2").UIDValidity
	if newV == first.UIDValidity {
		t.Fatalf("B's S2 kept the clashing UIDVALIDITY %d", newV)
	}
	// As if the revalidating sync had stopped before A's part: B holds
	// the new S2 under the new value, A under the old one.
	ul := testmail.Uidlist(t, a, "S2")
	ul.UIDValidity = first.UIDValidity
	if err := maildir.WriteUidlist(dir, ul); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	va, vb := testmail.Uidlist(t, a, "S2").UIDValidity, testmail.Uidlist(t, b, "S2").UIDValidity
	if va != vb || va == first.UIDValidity {
		t.Fatalf("S2's UIDVALIDITY after the half: A %d, B %d; the deleted S2 had %d", va, vb, first.UIDValidity)
	}
}

// TestNewUIDValidityReachesAThirdReplica: only B knows why a mailbox
// needed a new UIDVALIDITY (B deleted another mailbox of its name with
// the same value); C, which made it, still holds the old value. Syncs with
// C must carry the new value there, not take the old one back (which made
// the A-B pair revalidate again on every round).
func TestNewUIDValidityReachesAThirdReplica(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	testmail.Deliver(t, a, "INBOX", "a")
	testmail.Deliver(t, b, "INBOX", "b")
	testmail.Deliver(t, c, "INBOX", "c")
	first := dovecotMakes(t, b, "S2")
	testmail.Deliver(t, b, "S2", "in B's S2")
	sync2(t, b, filepath.Join(t.TempDir(), "scratch")) // B's index knows it
	testmail.DeleteWithIntent(t, b, "S2")
	sync2(t, b, filepath.Join(t.TempDir(), "scratch2"))

	testmail.MakeMailbox(t, c, "S2", first.UIDValidity)
	msg := testmail.Deliver(t, c, "S2", "in C's S2")
	for round := 0; round < 3; round++ {
		for _, p := range [][2]string{{c, a}, {a, b}} {
			testmail.SyncUntilQuiet(t, p[0], p[1], session.Options{}, 4)
		}
	}
	vs := map[uint32]bool{}
	for _, r := range []string{a, b, c} {
		vs[testmail.Uidlist(t, r, "S2").UIDValidity] = true
		if testmail.Find(t, r, "S2", msg) == "" {
			t.Fatalf("%s: C's message not in S2", r)
		}
	}
	if len(vs) != 1 || vs[first.UIDValidity] {
		t.Fatalf("S2's UIDVALIDITYs on A, B, C: %v; B's deleted S2 had %d", vs, first.UIDValidity)
	}
	assertIdle(t, c, a)
	assertIdle(t, a, b)
}

// TestSecondDeleteInTheSameSecondReplicates: A deletes Work, B's new mail
// brings it back, and A deletes it again, both DELETE records in one
// second (dovecot.mailbox.log has whole seconds). The second DELETE is a
// delete of the mailbox's new life and replicates; it was read as a
// directory that vanished (the mark of the life compared times only), and
// Work came back (property class 2, seed 5081928403397643986).
func TestSecondDeleteInTheSameSecondReplicates(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Work", "first")
	settle(t, a, b)
	when := time.Now().Truncate(time.Second)
	testmail.DeleteWithIntentAt(t, a, "Work", when)
	fromB := testmail.Deliver(t, b, "Work", "new on B, never seen by A")
	settle(t, a, b)
	if testmail.Find(t, a, "Work", fromB) == "" {
		t.Fatalf("Work did not come back to A with B's new mail")
	}
	testmail.DeleteWithIntentAt(t, a, "Work", when)
	settle(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX"}, a, b)
}
