package index_test

import (
	"os"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestFolderAwayDuringItsScanIsNotRestored: a client on A expunges a
// message of Box; then, while A's scan reads Box, Box's directory goes
// away (a client's RENAME Box X; the scan's lock of Box's uidlist finds
// no directory) and comes back before the apply (the client's RENAME X
// Box), as Dovecot's own renames and a sync's swaps move folders. The scan
// met the directory gone mid-read: it does not know what became of it, and
// must leave Box as it was for the next scan. Taken for a folder that
// vanished without a DELETE (Missing), the sync restored it from B into
// the directory that came back: B's copy of the expunged message went back
// into A's uidlist at its old UID under the UIDVALIDITY A's Dovecot had
// seen it expunged in (the IMAP stress on 2.4, session 10, long seed
// 1795948642199804854: "Expunged message reappeared, giving a new UID (old
// uid=1, ...)" on A's S3).
func TestFolderAwayDuringItsScanIsNotRestored(t *testing.T) {
	a, b := roots(t)
	m1 := testmail.Deliver(t, a, "Box", "one")
	testmail.Deliver(t, a, "Box", "two")
	testmail.Deliver(t, a, "Zed", "z")
	settle(t, a, b)
	before := testmail.Uidlist(t, a, "Box")
	uid := uidOfBase(t, a, "Box", m1)
	testmail.Expunge(t, a, "Box", m1)
	testmail.Deliver(t, a, "Zed", "z2") // (so that the scan reads Zed, after Box)

	dir := testmail.Dir(t, a, "Box")
	zed := testmail.Dir(t, a, "Zed")
	away := dir + "-away"
	moved, back := false, false
	restore := index.SetTestHookBetweenListings(func(d string) {
		switch {
		case !moved && d == dir:
			moved = true
			if err := os.Rename(dir, away); err != nil {
				t.Fatal(err)
			}
		case moved && !back && d == zed:
			// Back before the scan ends (the client's second RENAME).
			back = true
			if err := os.Rename(away, dir); err != nil {
				t.Fatal(err)
			}
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !moved || !back {
		t.Fatalf("the listing hook moved Box away: %v, back: %v", moved, back)
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 6)
	testmail.Converged(t, a, b)
	after := testmail.Uidlist(t, a, "Box")
	if after.UIDValidity == before.UIDValidity {
		for _, rec := range after.Records {
			if rec.UID == uid && testmail.FindFile(t, a, "Box", maildir.UidRecord.Base(rec)) != "" {
				t.Errorf("A's Box lists UID %d again, with a file, under UIDVALIDITY %d, where A's client expunged it: Dovecot says \"Expunged message reappeared\"", uid, after.UIDValidity)
			}
		}
	}
	if testmail.Find(t, b, "Box", m1) != "" {
		t.Errorf("B kept the message A's client expunged")
	}
}

// TestFolderBackBeforeItsRestore: Box's directory is away when A's scan
// lists the root (a client's RENAME Box X, with no DELETE: the scan takes
// Box for vanished and the sync restores it from B under a new
// UIDVALIDITY), and comes back before A's apply (the client's RENAME X
// Box). The restore then meets the directory it is to make, holding Box's
// own uidlist under the old UIDVALIDITY, where A's client expunged a
// message: the message must not come back at its old UID under that
// UIDVALIDITY (Dovecot: "Expunged message reappeared").
func TestFolderBackBeforeItsRestore(t *testing.T) {
	a, b := roots(t)
	m1 := testmail.Deliver(t, a, "Box", "one")
	testmail.Deliver(t, a, "Box", "two")
	testmail.Deliver(t, a, "Zed", "z")
	settle(t, a, b)
	before := testmail.Uidlist(t, a, "Box")
	uid := uidOfBase(t, a, "Box", m1)
	testmail.Expunge(t, a, "Box", m1)
	testmail.Deliver(t, a, "Zed", "z2") // (so that the scan reads Zed)

	dir := testmail.Dir(t, a, "Box")
	zed := testmail.Dir(t, a, "Zed")
	away := dir + "-away"
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	back := false
	restore := index.SetTestHookBetweenListings(func(d string) {
		if !back && d == zed {
			back = true
			if err := os.Rename(away, dir); err != nil {
				t.Fatal(err)
			}
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !back {
		t.Fatal("the listing hook did not run")
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 6)
	testmail.Converged(t, a, b)
	after := testmail.Uidlist(t, a, "Box")
	t.Logf("Box's UIDVALIDITY %d -> %d; B has the expunged message: %v", before.UIDValidity, after.UIDValidity, testmail.Find(t, b, "Box", m1) != "")
	if after.UIDValidity == before.UIDValidity {
		for _, rec := range after.Records {
			if rec.UID == uid && testmail.FindFile(t, a, "Box", maildir.UidRecord.Base(rec)) != "" {
				t.Errorf("A's Box lists UID %d again, with a file, under UIDVALIDITY %d, where A's client expunged it: Dovecot says \"Expunged message reappeared\"", uid, after.UIDValidity)
			}
		}
	}
}
