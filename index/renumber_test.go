package index_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

var (
	roots      = testmail.Roots
	sync2      = testmail.SyncClean
	settle     = testmail.Settle
	assertIdle = testmail.AssertIdle
)

// A renumbered message gets a new file name on the side that renumbers it
// (its identity stays in the uidlist's G field), so that Dovecot sees its
// old UID expunged and a new message, never a file name that changed its
// UID ("Duplicate file entry", "Expunged message reappeared"). When it
// comes back to that mailbox later (expunged, then copied back from the
// peer), it does not get the old name again either.
func TestRenumberGivesTheFileANewName(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "INBOX", "first")
	settle(t, a, b)
	ma := testmail.Deliver(t, a, "INBOX", "on A")
	mb := testmail.Deliver(t, b, "INBOX", "on B")
	s := sync2(t, a, b)
	if s.Renumbered == 0 {
		t.Fatal("nothing renumbered: the scenario did not happen")
	}
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
	renamed := 0
	for _, side := range []struct{ root, own string }{{a, ma}, {b, mb}} {
		if testmail.FindFile(t, side.root, "INBOX", side.own) != "" {
			continue // this side kept its UID for its own message
		}
		renamed++
		p := testmail.Find(t, side.root, "INBOX", side.own)
		if p == "" {
			t.Fatalf("%s: message %s lost", side.root, side.own)
		}
		base := strings.SplitN(filepath.Base(p), ":", 2)[0]
		recs := testmail.Uidlist(t, side.root, "INBOX").Records
		var newUID uint32
		for _, rec := range recs {
			if rec.Base() == base {
				newUID = rec.UID
				if g, _ := rec.Get('G'); g != side.own {
					t.Errorf("%s: renamed file %s has G %q, want %q", side.root, base, g, side.own)
				}
			}
		}
		for _, rec := range recs {
			// The old name may stay listed at the old UID, without a file
			// (an expunged message's record, as Dovecot keeps them), never
			// at another UID.
			if rec.Base() == side.own && rec.UID >= newUID {
				t.Errorf("%s: the uidlist lists the old name %s at UID %d (the message is at UID %d)", side.root, side.own, rec.UID, newUID)
			}
		}
	}
	if renamed == 0 {
		t.Fatal("no side renamed the message it renumbered")
	}

}

// A renumbering killed between the renames and the uidlist is rolled back
// when the replica opens next: the files are back under the names the
// uidlist lists, and the replicas converge.
func TestRenumberKilledBeforeUidlistRollsBack(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "INBOX", "first")
	settle(t, a, b)
	testmail.Deliver(t, a, "INBOX", "on A")
	testmail.Deliver(t, b, "INBOX", "on B")
	// Stop the apply right after its renames (test hook).
	syncKilledBeforeUidlistWrite(t, a, b)
	// The renamed-away names are listed without a file now.
	orphans := 0
	for _, root := range []string{a, b} {
		for _, rec := range testmail.Uidlist(t, root, "INBOX").Records {
			if testmail.FindFile(t, root, "INBOX", rec.Base()) == "" {
				orphans++
			}
		}
	}
	if orphans == 0 {
		t.Fatal("the hook did not stop the apply between renames and uidlist")
	}
	// Opening a replica rolls its renames back: every listed name has its
	// file again, and no file is unlisted.
	for _, root := range []string{a, b} {
		r, err := index.Open(context.Background(), maildir.Location{Root: root}, index.Options{Hostname: "test"})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		listed := map[string]bool{}
		for _, rec := range testmail.Uidlist(t, root, "INBOX").Records {
			listed[rec.Base()] = true
			if testmail.FindFile(t, root, "INBOX", rec.Base()) == "" {
				t.Errorf("%s: after open, UID %d (%s) has no file", root, rec.UID, rec.Base())
			}
		}
		for _, sub := range []string{"cur", "new"} {
			ents, _ := os.ReadDir(filepath.Join(testmail.Dir(t, root, "INBOX"), sub))
			for _, e := range ents {
				if base := strings.SplitN(e.Name(), ":", 2)[0]; !listed[base] && sub == "cur" {
					t.Errorf("%s: after open, %s is not in the uidlist", root, e.Name())
				}
			}
		}
	}
	// Open (which rolls back) and sync until converged.
	for i := 0; ; i++ {
		s, err := testmail.TrySync(a, b, session.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !s.Changed {
			break
		}
		if i == 3 {
			t.Fatal("no convergence")
		}
	}
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
	for _, root := range []string{a, b} {
		if n := len(testmail.Files(t, root, "INBOX")); n != 3 {
			t.Errorf("%s INBOX holds %d messages; want 3", root, n)
		}
	}
}

// A flag change Dovecot made after the scan is not undone by the sync's
// own flag change on that message: the sync skips it (exit 2) and the next
// one merges both.
func TestFlagRenameAfterScanNotUndone(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "flags")
	settle(t, a, b)
	testmail.SetFlags(t, b, "INBOX", m, "F")
	// A client on A sets \Seen after A's scan and before A's apply.
	restore := index.SetTestHookBeforeApplyBox(func(root string) {
		if root == a {
			testmail.SetFlags(t, a, "INBOX", m, "S")
		}
	})
	s, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Changed {
		t.Fatalf("the sync did not notice the flag change under it: %+v", s.ResultA)
	}
	testmail.Sync(t, a, b, session.Options{})
	testmail.Converged(t, a, b)
	for _, root := range []string{a, b} {
		if f := testmail.Flags(t, root, "INBOX", m); f != "FS" {
			t.Errorf("%s: flags %q, want FS (both changes kept)", root, f)
		}
	}
}

// A client creates the target of a folder rename just before the sync
// renames its folder there: the rename is left for the next sync (exit 2),
// not an error, and the next syncs converge.
func TestRenameTargetMadeDuringSync(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "S1", "in S1")
	settle(t, a, b)
	testmail.Rename(t, a, "S1", "S3")
	restore := index.SetTestHookBeforeRename(func(dst string) {
		if strings.HasPrefix(dst, b) {
			testmail.Deliver(t, b, "S3", "a client's S3 on B")
		}
	})
	s, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatalf("sync with the rename target made under it: %v", err)
	}
	if !s.Changed {
		t.Fatal("the sync did not report the rename it could not make")
	}
	for i := 0; ; i++ {
		s := testmail.Sync(t, a, b, session.Options{})
		if !s.Changed {
			break
		}
		if i == 3 {
			t.Fatal("no convergence")
		}
	}
	testmail.Converged(t, a, b)
	for _, root := range []string{a, b} {
		n := 0
		for _, mb := range testmail.Mailboxes(t, root) {
			n += len(testmail.Files(t, root, mb))
		}
		if n != 2 {
			t.Errorf("%s holds %d messages; want 2", root, n)
		}
	}
}

// A uidlist lock that Dovecot took over while the apply held it (Dovecot
// overrides one it finds stale: not refreshed for two minutes) is not
// written through: the apply fails with the lock named, the uidlist stays
// as the other writer left it, and the next syncs finish the work.
func TestApplyDoesNotWriteUidlistUnderALostLock(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "INBOX", "first")
	settle(t, a, b)
	testmail.Deliver(t, a, "INBOX", "on A")
	testmail.Deliver(t, b, "INBOX", "on B")
	var stolen, stolenDir string
	restore := index.SetTestHookBeforeUidlistWrite(func() {
		if stolen != "" {
			return
		}
		// What Dovecot's override does: remove the lock and take it anew
		// (a file of its own, at the same path).
		dir := testmail.Dir(t, a, "INBOX")
		lock := filepath.Join(dir, "dovecot-uidlist.lock")
		if _, err := os.Stat(lock); err != nil {
			dir = testmail.Dir(t, b, "INBOX")
			lock = filepath.Join(dir, "dovecot-uidlist.lock")
		}
		if err := os.Remove(lock); err != nil {
			t.Errorf("removing the lock: %v", err)
			return
		}
		if err := os.WriteFile(lock, []byte("dovecot"), 0o600); err != nil {
			t.Error(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, "dovecot-uidlist"))
		if err != nil {
			t.Error(err)
		}
		stolenDir, stolen = dir, string(data)
	})
	s, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if stolen == "" {
		t.Fatal("the hook did not run: nothing renumbered")
	}
	if err != nil {
		t.Fatalf("sync error %v: a lost lock is a change during the sync (exit 2), not a failure", err)
	}
	skipped := strings.Join(append(s.ResultA.Skipped, s.ResultB.Skipped...), "\n")
	if !s.Changed || !strings.Contains(skipped, "not writing dovecot-uidlist") || !strings.Contains(skipped, "INBOX") {
		t.Fatalf("changed %v, skipped %q: want the lost lock named with the mailbox", s.Changed, skipped)
	}
	if data, err := os.ReadFile(filepath.Join(stolenDir, "dovecot-uidlist")); err != nil || string(data) != stolen {
		t.Errorf("the uidlist changed under the lost lock (%v):\n%s\nwas:\n%s", err, data, stolen)
	}
	lock := filepath.Join(stolenDir, "dovecot-uidlist.lock")
	if data, err := os.ReadFile(lock); err != nil || string(data) != "dovecot" {
		t.Errorf("the other writer's lock: %q, %v; want it left alone", data, err)
	}
	os.Remove(lock) // the other writer is done
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 4)
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
}

// TestKilledApplyLeavesNoUnmappedKeywordLetter: an apply that gives a file
// a new keyword and is killed before it writes the uidlist has already
// written the keyword's letter into dovecot-keywords (as Dovecot does, the
// list first): a file name never carries a letter the list lacks, which
// every later scan (and Dovecot) would read as no keyword at all.
func TestKilledApplyLeavesNoUnmappedKeywordLetter(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Box", "first")
	m := testmail.Deliver(t, a, "Box", "gets a keyword")
	settle(t, a, b)
	testmail.WriteKeywords(t, a, "Box", []string{"$Label1"})
	testmail.SetFlags(t, a, "Box", m, "a")
	// A renumbering in the same apply, so that the hook runs.
	testmail.Deliver(t, a, "Box", "on A")
	testmail.Deliver(t, b, "Box", "on B")
	syncKilledBeforeUidlistWrite(t, a, b)
	p := testmail.Find(t, b, "Box", m)
	if p == "" {
		t.Fatal("B lost the message")
	}
	if !strings.Contains(filepath.Base(p), ":2,a") {
		t.Fatalf("the killed apply did not give B's file the keyword's letter (%s): the scenario did not happen", filepath.Base(p))
	}
	if kw := testmail.Keywords(t, b, "Box"); len(kw) == 0 || kw[0] != "$Label1" {
		t.Errorf("B's file %s carries letter a, B's dovecot-keywords is %q", filepath.Base(p), kw)
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 5)
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
}

// TestFolderDeletedUnderAnApplyIsAChange: a client deletes the folder
// while an apply holds its lock (Dovecot's DELETE removes the directory,
// our lock file with it): the apply stops early as changed during the sync
// (exit 2), not as a failure (an IMAP stress run met it), and the next
// syncs replicate the delete.
func TestFolderDeletedUnderAnApplyIsAChange(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Box", "first")
	settle(t, a, b)
	testmail.Deliver(t, a, "Box", "on A")
	testmail.Deliver(t, b, "Box", "on B")
	done := false
	restore := index.SetTestHookBeforeUidlistWrite(func() {
		if done {
			return
		}
		done = true
		for _, root := range []string{a, b} {
			dir := testmail.Dir(t, root, "Box")
			if _, err := os.Stat(filepath.Join(dir, "dovecot-uidlist.lock")); err == nil {
				if err := os.RemoveAll(dir); err != nil {
					t.Error(err)
				}
			}
		}
	})
	s, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if !done {
		t.Fatal("the hook did not run")
	}
	if err != nil {
		t.Fatalf("sync error %v: a folder deleted during the sync is a change (exit 2)", err)
	}
	if !s.Changed {
		t.Fatal("the sync did not report the change")
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 5)
	testmail.Converged(t, a, b)
}

// syncKilledBeforeUidlistWrite runs a sync of a and b whose first apply
// with renames or fresh-name links is killed (a panic in the test hook)
// before it writes the uidlist; it fails the test if no apply got there.
func syncKilledBeforeUidlistWrite(t *testing.T, a, b string) {
	t.Helper()
	killed := false
	restore := index.SetTestHookBeforeUidlistWrite(func() {
		killed = true
		panic("killed")
	})
	func() {
		defer func() { _ = recover() }()
		_, _ = testmail.TrySync(a, b, session.Options{})
	}()
	restore()
	if !killed {
		t.Fatal("the apply was not killed before its uidlist write")
	}
}
