package index_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestFolderBackBeforeItsRestore: Box's directory is away during A's scan
// (a client's RENAME Box X, with no DELETE, that the scan's second look
// does not see undone either: the scan takes Box for vanished, and the
// sync restores it from B under a new UIDVALIDITY), and comes back before
// A's apply (the client's RENAME X Box, or X Other). The restore then
// meets Box's own directory, its uidlist under the old UIDVALIDITY, where
// A's client expunged a message: B's copy must not come back at its old
// UID under that UIDVALIDITY (Dovecot: "Expunged message reappeared"; the
// IMAP stress on 2.4, session 10, long seed 1795949568032157517, on A's
// S2). Passes before and after 7070eea: a guard of the restore path.
func TestFolderBackBeforeItsRestore(t *testing.T) {
	for _, backAs := range []string{"Box", "Other"} {
		t.Run("back as "+backAs, func(t *testing.T) {
			a, b := roots(t)
			m1 := testmail.Deliver(t, a, "Box", "one")
			testmail.Deliver(t, a, "Box", "two")
			settle(t, a, b)
			before := testmail.Uidlist(t, a, "Box")
			uid := uidOfBase(t, a, "Box", m1)
			testmail.Expunge(t, a, "Box", m1)
			testmail.Deliver(t, a, "Zed", "z") // (so that B has something to apply)

			dir := testmail.Dir(t, a, "Box")
			back := testmail.Dir(t, a, backAs)
			away := filepath.Join(t.TempDir(), "unseen") // (where no scan looks)
			if err := os.Rename(dir, away); err != nil {
				t.Fatal(err)
			}
			done := false
			restore := index.SetTestHookBeforeApplyBox(func(root string) {
				if !done && root == b {
					done = true
					if err := os.Rename(away, back); err != nil {
						t.Fatal(err)
					}
				}
			})
			sum, err := testmail.TrySync(a, b, session.Options{})
			restore()
			if err != nil {
				t.Fatal(err)
			}
			if !done {
				t.Fatal("the apply hook did not run")
			}
			t.Logf("first sync: revalidated %v", sum.Revalidated)
			for _, d := range []string{dir, back} {
				ul, _, err := maildir.ReadUidlist(d)
				if err != nil || ul.UIDValidity != before.UIDValidity {
					continue
				}
				for _, rec := range ul.Records {
					for _, f := range listCur(t, d) {
						if rec.UID == uid && maildir.UidRecord.Base(rec) == baseOfName(f) {
							t.Errorf("%s lists UID %d again, with its file %s, under UIDVALIDITY %d, where A's client expunged it: Dovecot says \"Expunged message reappeared\"", d, uid, f, ul.UIDValidity)
						}
					}
				}
			}
			testmail.SyncUntilQuiet(t, a, b, session.Options{}, 6)
			testmail.Converged(t, a, b)
		})
	}
}

// listCur lists the files in dir's cur/ and new/.
func listCur(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"cur", "new"} {
		es, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		for _, e := range es {
			out = append(out, e.Name())
		}
	}
	return out
}

func baseOfName(n string) string {
	if i := strings.IndexByte(n, ':'); i >= 0 {
		return n[:i]
	}
	return n
}

// TestDeleteLoggedAfterItsDirectoryGoes: a client's DELETE of Box on A
// removes Box's directory and then logs the delete in dovecot.mailbox.log;
// A's scan runs in between. Box must replicate as deleted, not come back
// from B as a folder that vanished without a DELETE (the user's DELETE
// undone, and the restore landing in whatever took Box's name meanwhile).
func TestDeleteLoggedAfterItsDirectoryGoes(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Box", "one")
	settle(t, a, b)
	ul := testmail.Uidlist(t, a, "Box")
	if err := testmail.Loc(a).RemoveMailboxDir(testmail.Dir(t, a, "Box"), nil); err != nil {
		t.Fatal(err)
	}
	logged := false
	restore := index.SetTestHookBeforeMissingRecheck(func(name string) {
		if logged || name != "Box" {
			return
		}
		logged = true
		if err := maildir.AppendMailboxLog(a, []maildir.LogRecord{{Type: 1, GUID: ul.GUID, Time: time.Now()}}); err != nil {
			t.Fatal(err)
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !logged {
		t.Fatal("the scan did not look again for Box")
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 4)
	testmail.WantMailboxes(t, []string{"INBOX"}, a, b)
}

// TestFolderMissedByTheListingIsNotRestored: the scan's listing of A's
// root misses Box's directory (a client renaming it as the listing reads:
// neither name listed) and it is there again a moment later. The scan
// must not take Box for vanished: restored from B under a new UIDVALIDITY,
// a message A's client expunged came back.
func TestFolderMissedByTheListingIsNotRestored(t *testing.T) {
	a, b := roots(t)
	m1 := testmail.Deliver(t, a, "Box", "one")
	testmail.Deliver(t, a, "Box", "two")
	settle(t, a, b)
	before := testmail.Uidlist(t, a, "Box")
	testmail.Expunge(t, a, "Box", m1)
	dir := testmail.Dir(t, a, "Box")
	away := filepath.Join(t.TempDir(), "unseen")
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	back := false
	restore := index.SetTestHookBeforeMissingRecheck(func(name string) {
		if !back && name == "Box" {
			back = true
			if err := os.Rename(away, dir); err != nil {
				t.Fatal(err)
			}
		}
	})
	sum, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !back {
		t.Fatal("the scan did not look again for Box")
	}
	if len(sum.Revalidated) > 0 {
		t.Errorf("revalidated %v: Box was taken for vanished", sum.Revalidated)
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 4)
	testmail.Converged(t, a, b)
	if got := testmail.Uidlist(t, a, "Box").UIDValidity; got != before.UIDValidity {
		t.Errorf("Box's UIDVALIDITY %d -> %d", before.UIDValidity, got)
	}
	if testmail.Find(t, b, "Box", m1) != "" || testmail.Find(t, a, "Box", m1) != "" {
		t.Errorf("the message A's client expunged came back")
	}
}
