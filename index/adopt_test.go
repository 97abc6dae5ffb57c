package index_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// mailboxesOf returns a replica's mailbox records (a scan first) by GUID.
func mailboxesOf(t *testing.T, root string) map[model.MailboxGUID]model.Mailbox {
	t.Helper()
	r, err := index.Open(context.Background(), maildir.Location{Root: root}, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err := r.Begin(context.Background(), replica.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[model.MailboxGUID]model.Mailbox{}
	for _, m := range rep.Mailboxes {
		out[m.GUID] = m
	}
	return out
}

// untilQuiet syncs a and b until a sync changes nothing (at most 4), then
// requires them identical and idle.
func untilQuiet(t *testing.T, a, b string) {
	t.Helper()
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 4)
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
}

// syncKilledBeforeWorkCommit syncs a and b with B's apply killed (a panic)
// right before its index commit of Work, after the files and uidlist are
// written; it fails the test if B never got there.
func syncKilledBeforeWorkCommit(t *testing.T, a, b string) {
	t.Helper()
	killed := false
	restore := index.SetTestHookBeforeBoxCommit(func(dir string) {
		if filepath.Dir(dir) == b && filepath.Base(dir) == ".Work" && !killed {
			killed = true
			panic("killed")
		}
	})
	func() {
		defer func() { _ = recover() }()
		_, _ = testmail.TrySync(a, b, session.Options{})
	}()
	restore()
	if !killed {
		t.Fatal("B's apply never committed Work")
	}
}

// An apply killed after it journaled an adopt (B's INBOX into A's) and
// before it touched the mailbox: B's uidlist still shows B's own INBOX, and
// the journal must be harmless (dropped by the next scan, no merge
// recorded); the next sync merges as if nothing had happened.
func TestKilledBeforeAdoptRewriteIsHarmless(t *testing.T) {
	a, b := roots(t)
	// A's INBOX handed out more UIDs: it is the keeper, B adopts it.
	testmail.Deliver(t, a, "INBOX", "A1")
	testmail.Deliver(t, a, "INBOX", "A2")
	testmail.Deliver(t, b, "INBOX", "B1")
	killed := false
	restore := index.SetTestHookBeforeApplyBox(func(root string) {
		if root == b && !killed {
			killed = true
			panic("killed")
		}
	})
	func() {
		defer func() { _ = recover() }()
		_, _ = testmail.TrySync(a, b, session.Options{})
	}()
	restore()
	if !killed {
		t.Fatal("B's apply never reached its INBOX")
	}
	own := testmail.Uidlist(t, b, "INBOX").GUID
	if own == testmail.Uidlist(t, a, "INBOX").GUID {
		t.Fatal("B's INBOX took A's GUID before the kill")
	}
	boxes := mailboxesOf(t, b)
	if m, ok := boxes[model.MailboxGUID(own)]; !ok || m.Deleted || m.Missing || m.Name != "INBOX" {
		t.Fatalf("B's own INBOX after the scan: %+v (present %v)", m, ok)
	}
	for _, m := range boxes {
		if m.MergedInto != (model.MailboxGUID{}) {
			t.Fatalf("a merge the disk never saw was recorded: %+v", m)
		}
	}
	untilQuiet(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX"}, a, b)
	for _, r := range []string{a, b} {
		if n := len(testmail.Files(t, r, "INBOX")); n != 3 {
			t.Errorf("%s INBOX holds %d messages, want 3", r, n)
		}
	}
}

// An adopt killed after B's uidlist took the winner's GUID, and then a
// client deletes the folder (under the winner's GUID, as Dovecot logs it)
// before B's next scan. That scan cannot see the uidlist any more: it
// records the merge as done (B's own GUID an alias of the winner) and the
// delete as the winner's, with the UIDNEXT the killed uidlist reached.
// Before, B's own mailbox was taken for Missing and came back, and merged
// again below UIDs the killed uidlist had given out (property test with
// rewrite kills, seed 16866159006981464484: a UID named two messages).
func TestKilledAdoptThenDeletedKeepsItsUIDs(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Work", "A1")
	testmail.Deliver(t, a, "Work", "A2")
	testmail.Deliver(t, b, "Work", "B1")
	own := func() model.MailboxGUID {
		scan(t, b)
		return model.MailboxGUID(testmail.Uidlist(t, b, "Work").GUID)
	}()
	syncKilledBeforeWorkCommit(t, a, b)
	ul := testmail.Uidlist(t, b, "Work")
	winner := model.MailboxGUID(ul.GUID)
	if winner == own {
		t.Fatal("B's Work kept its GUID: no merge on B")
	}
	testmail.DeleteWithIntent(t, b, "Work")
	boxes := mailboxesOf(t, b)
	if m := boxes[own]; !m.Deleted || m.MergedInto != winner {
		t.Errorf("B's own Work after the scan: %+v, want an alias of %s", m, winner)
	}
	if m, ok := boxes[winner]; !ok || !m.Deleted || m.UIDNext < ul.NextUID || m.UIDValidity != ul.UIDValidity {
		t.Errorf("the winner on B after the scan: %+v (present %v), want deleted with UIDNEXT >= %d, UIDVALIDITY %d", m, ok, ul.NextUID, ul.UIDValidity)
	}
	untilQuiet(t, a, b)
	keepsMeanings(t, ul, b, "Work")
}

// keepsMeanings fails the test if mailbox's uidlist on root, under the
// GUID and UIDVALIDITY of was, names another file at a UID was named, or
// shows a lower NEXTUID.
func keepsMeanings(t *testing.T, was *maildir.Uidlist, root, mailbox string) {
	t.Helper()
	now := testmail.Uidlist(t, root, mailbox)
	if now.GUID != was.GUID || now.UIDValidity != was.UIDValidity {
		return
	}
	named := map[uint32]string{}
	for _, r := range was.Records {
		named[r.UID] = r.FileName
	}
	for _, r := range now.Records {
		if f, ok := named[r.UID]; ok && baseName(f) != baseName(r.FileName) {
			t.Errorf("UID %d named %s, now %s", r.UID, f, r.FileName)
		}
	}
	if now.NextUID < was.NextUID {
		t.Errorf("NEXTUID went down from %d to %d", was.NextUID, now.NextUID)
	}
}

func baseName(f string) string {
	fn, err := maildir.ParseFileName(f)
	if err != nil {
		return f
	}
	return fn.Base
}

// The same, but the client then makes the folder again (an empty directory
// at the old name) before B's next scan, and B's own Work had another
// UIDVALIDITY than the winner. The scan restored B's own mailbox into the
// new directory from the index (the delete was logged under the winner's
// GUID, not B's own), the sync merged it into the winner again, and the
// UIDNEXT of that merge, counted from B's own, gave a UID of the killed
// uidlist to another message (property seed 17346408204426553647). Now
// the new directory is a new mailbox and the winner is Deleted with that
// UIDNEXT.
//
// The same with the folder removed without intent (rm -rf) and made again:
// the winner is then Missing (restored from the peer), with that UIDNEXT.
func TestKilledAdoptDeletedAndMadeAgain(t *testing.T) {
	t.Run("deleted", func(t *testing.T) { killedAdoptGoneAndMadeAgain(t, true) })
	t.Run("rm -rf", func(t *testing.T) { killedAdoptGoneAndMadeAgain(t, false) })
}

func killedAdoptGoneAndMadeAgain(t *testing.T, intent bool) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Work", "A1")
	testmail.Deliver(t, a, "Work", "A2")
	testmail.Deliver(t, b, "Work", "B1")
	scan(t, a)
	scan(t, b)
	// B's Work made in another second than A's.
	ulb := testmail.Uidlist(t, b, "Work")
	ulb.UIDValidity = testmail.Uidlist(t, a, "Work").UIDValidity + 7
	if err := maildir.WriteUidlist(testmail.Dir(t, b, "Work"), ulb); err != nil {
		t.Fatal(err)
	}
	scan(t, b)
	own := model.MailboxGUID(ulb.GUID)
	syncKilledBeforeWorkCommit(t, a, b)
	ul := testmail.Uidlist(t, b, "Work")
	winner := model.MailboxGUID(ul.GUID)
	if winner == own {
		t.Fatal("B's Work kept its GUID: no merge on B")
	}
	if intent {
		testmail.DeleteWithIntent(t, b, "Work")
	} else if err := os.RemoveAll(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	boxes := mailboxesOf(t, b)
	if m := boxes[own]; !m.Deleted || m.MergedInto != winner {
		t.Errorf("B's own Work after the scan: %+v, want an alias of %s", m, winner)
	}
	if m, ok := boxes[winner]; !ok || m.Deleted != intent || m.Missing == intent || m.UIDNext < ul.NextUID {
		t.Errorf("the winner on B after the scan: %+v (present %v), want deleted %v, missing %v, UIDNEXT >= %d", m, ok, intent, !intent, ul.NextUID)
	}
	if g := model.MailboxGUID(testmail.Uidlist(t, b, "Work").GUID); g == own || g == winner {
		t.Errorf("the folder made again holds %s (own %s, winner %s), want a new mailbox", g, own, winner)
	}
	untilQuiet(t, a, b)
	keepsMeanings(t, ul, b, "Work")
}

// Two mailboxes S1 made apart merge; on the side that adopts the other's,
// a client renames its S1 to S2 and creates a new, empty S1 after the scan
// and before the merge moves the mailbox (now at S2) to S1's directory.
// The new S1 is a client's mailbox, not a leftover: the merge must not
// remove it (it did, with no lock, while Dovecot could be creating it:
// stress seed 9599940858774841258, a CREATE S1/Kid undone). The merge
// waits, and the syncs converge to the client's folders: S2 with both
// messages, and the new S1.
func TestMergeKeepsFolderMadeAtItsTarget(t *testing.T) {
	a, b := roots(t)
	ma := testmail.Deliver(t, a, "S1", "A's S1")
	mb := testmail.Deliver(t, b, "S1", "B's S1")
	var made [16]byte
	var side string
	restore := index.SetTestHookBeforeAdopt(func(dst string) {
		if side != "" || filepath.Base(dst) != ".S1" {
			return
		}
		side = filepath.Dir(dst)
		testmail.Rename(t, side, "S1", "S2")
		made = maildir.NewGUID()
		ul := &maildir.Uidlist{Version: 3, UIDValidity: 1234567, NextUID: 1, GUID: made}
		if _, err := testmail.Loc(side).MakeMailbox(dst, ul); err != nil {
			t.Fatal(err)
		}
	})
	s, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if side == "" {
		t.Fatal("no merge moved a mailbox into S1")
	}
	if !s.Changed {
		t.Error("the sync did not report the merge it could not finish")
	}
	if got := testmail.Uidlist(t, side, "S1").GUID; got != made {
		t.Fatalf("%s: the client's new S1 (GUID %x) was replaced by %x", side, made, got)
	}
	untilQuiet(t, a, b)
	for _, root := range []string{a, b} {
		if got := testmail.Uidlist(t, root, "S1").GUID; got != made {
			t.Errorf("%s: S1 is %x, want the client's new S1 %x", root, got, made)
		}
		if n := len(testmail.Files(t, root, "S1")); n != 0 {
			t.Errorf("%s: the client's new S1 holds %d messages, want 0", root, n)
		}
		for _, m := range []string{ma, mb} {
			if testmail.Find(t, root, "S2", m) == "" {
				t.Errorf("%s: message %s is not in S2", root, m)
			}
		}
	}
}
