package session_test

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// killedSync runs one sync of a and b whose applies die (a panic from
// index.Options.BeforeBoxCommit, recovered around Apply as a process that
// died there) at the first mailbox commit for which kill returns true. It
// returns the root whose apply was killed ("" if none was).
func killedSync(t *testing.T, a, b string, opt session.Options, kill func(dir string, rewrite bool) bool) string {
	t.Helper()
	killed := ""
	open := func(root string) *index.Replica {
		r, err := index.Open(context.Background(), testmail.Loc(root), index.Options{LockTimeout: 10 * time.Second,
			BeforeBoxCommit: func(dir string, rewrite bool) {
				if killed == "" && kill(dir, rewrite) {
					killed = root
					panic(errKilled)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ra, rb := open(a), open(b)
	defer ra.Close()
	defer rb.Close()
	_, err := session.Run(context.Background(), &dying{Replica: ra}, &dying{Replica: rb}, opt)
	if killed != "" && err == nil {
		t.Fatal("a killed apply's sync reported success")
	}
	if killed == "" && err != nil {
		t.Fatal(err)
	}
	if bad := append(ra.Verify(), rb.Verify()...); len(bad) > 0 {
		t.Fatalf("index invariants broken by the killed sync: %v", bad)
	}
	return killed
}

// dying is a replica whose Apply stops where its hook panicked errKilled.
type dying struct{ replica.Replica }

func (d *dying) Apply(ctx context.Context, plan *merge.SidePlan, src replica.BodySource) (res *replica.ApplyResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			if p != errKilled {
				panic(p)
			}
			res, err = nil, errInjected
		}
	}()
	return d.Replica.Apply(ctx, plan, src)
}

// Two replicas each got mail into INBOX before their first sync: two
// mailboxes made independently under one name, merged (contract §3.4).
// One side adopts the other's INBOX: it rewrites its uidlist with the
// winner's GUID and UIDVALIDITY, then records the merge in its index. A
// kill in between (after the uidlist, before the index) left the index
// holding the loser live at a directory that holds the winner: the next
// scan took the loser for Missing and the peers restored it renamed aside,
// and as INBOX is never renamed on disk that never converged ("create of
// INBOX: the directory now holds mailbox ..."; property seed
// 7466045879350227286 with rewrite kills). The adopt journal makes the
// next scan complete the merge.
func TestKilledInboxMergeConverges(t *testing.T) {
	a, b := testmail.Roots(t)
	m1 := testmail.Deliver(t, a, "INBOX", "M1")
	m2 := testmail.Deliver(t, b, "INBOX", "M2")
	victim := killedSync(t, a, b, session.Options{}, func(dir string, rewrite bool) bool { return rewrite })
	if victim == "" {
		t.Fatal("no apply rewrote INBOX: no merge")
	}
	other := a
	if victim == a {
		other = b
	}
	// The killed side's uidlist carries the winner's identity already.
	ul, wl := testmail.Uidlist(t, victim, "INBOX"), testmail.Uidlist(t, other, "INBOX")
	if ul.GUID != wl.GUID || ul.UIDValidity != wl.UIDValidity {
		t.Fatalf("the kill came before the uidlist rewrite: %x/%d vs the winner's %x/%d", ul.GUID, ul.UIDValidity, wl.GUID, wl.UIDValidity)
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 3)
	testmail.Converged(t, a, b)
	testmail.AssertIdle(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX"}, a, b)
	for _, r := range []string{a, b} {
		files := testmail.Files(t, r, "INBOX")
		if len(files) != 2 {
			t.Errorf("%s INBOX holds %d messages, want M1 and M2: %v", r, len(files), files)
		}
		for _, m := range []string{m1, m2} {
			if testmail.Find(t, r, "INBOX", m) == "" {
				t.Errorf("%s: %s lost", r, m)
			}
		}
	}
	ua, ub := testmail.Uidlist(t, a, "INBOX"), testmail.Uidlist(t, b, "INBOX")
	if ua.GUID != wl.GUID || ub.GUID != wl.GUID || ua.UIDValidity != wl.UIDValidity || ub.UIDValidity != wl.UIDValidity {
		t.Errorf("INBOX identity: A %x/%d, B %x/%d, the winner was %x/%d", ua.GUID, ua.UIDValidity, ub.GUID, ub.UIDValidity, wl.GUID, wl.UIDValidity)
	}
	ids := func(root string) []uint32 {
		var u []uint32
		for uid := range testmail.UIDs(t, root, "INBOX") {
			u = append(u, uid)
		}
		slices.Sort(u)
		return u
	}
	if !slices.Equal(ids(a), ids(b)) {
		t.Errorf("UIDs differ: A %v, B %v", ids(a), ids(b))
	}
}

// A backup onto a replica whose INBOX was made independently adopts it and
// resets it: the uidlist is rewritten with the source's GUID, UIDVALIDITY
// and UIDs, then the index records it. Killed in between, the next backup
// completes the reset from the journal and makes the copy exact.
func TestKilledBackupResetConverges(t *testing.T) {
	a, b := testmail.Roots(t)
	m1 := testmail.Deliver(t, a, "INBOX", "M1")
	m2 := testmail.Deliver(t, a, "INBOX", "M2")
	testmail.Deliver(t, b, "INBOX", "B's own")
	testmail.Deliver(t, b, "INBOX", "B's own too")
	victim := killedSync(t, a, b, session.Options{Backup: true}, func(dir string, rewrite bool) bool { return rewrite })
	if victim != b {
		t.Fatalf("killed %q, want B's reset", victim)
	}
	ua, ub := testmail.Uidlist(t, a, "INBOX"), testmail.Uidlist(t, b, "INBOX")
	if ua.GUID != ub.GUID || ua.UIDValidity != ub.UIDValidity {
		t.Fatalf("the kill came before the uidlist rewrite: B %x/%d, A %x/%d", ub.GUID, ub.UIDValidity, ua.GUID, ua.UIDValidity)
	}
	s := testmail.Sync(t, a, b, session.Options{Backup: true})
	if s.Changed {
		t.Fatalf("backup after the kill skipped steps: %v", s.ResultB.Skipped)
	}
	testmail.Converged(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX"}, b)
	s = testmail.Sync(t, a, b, session.Options{Backup: true})
	if n := s.ResultB.Added + s.ResultB.Expunged + s.ResultB.Flagged + s.ResultB.Moved + s.ResultB.MailboxOps; n != 0 {
		t.Fatalf("second backup did %d things: %+v", n, s.ResultB)
	}
	files := testmail.Files(t, b, "INBOX")
	if len(files) != 2 || testmail.Find(t, b, "INBOX", m1) == "" || testmail.Find(t, b, "INBOX", m2) == "" {
		t.Fatalf("B INBOX %v, want M1 and M2 only", files)
	}
	ub = testmail.Uidlist(t, b, "INBOX")
	if ua.GUID != ub.GUID || ua.UIDValidity != ub.UIDValidity {
		t.Fatalf("B INBOX %x/%d, A %x/%d", ub.GUID, ub.UIDValidity, ua.GUID, ua.UIDValidity)
	}
}

// A backup reset that keeps the mailbox's GUID and UIDVALIDITY (the
// destination handed out UIDs the source did not) needs no adopt journal:
// killed after its uidlist rewrite, the next scan reads the records as
// they now are (the dropped ones expunged), and the next backup makes the
// copy exact.
func TestKilledBackupResetSameIdentityConverges(t *testing.T) {
	a, b := testmail.Roots(t)
	m1 := testmail.Deliver(t, a, "INBOX", "M1")
	settle(t, a, b)
	testmail.Deliver(t, b, "INBOX", "B's own")
	victim := killedSync(t, a, b, session.Options{Backup: true}, func(dir string, rewrite bool) bool { return rewrite })
	if victim != b {
		t.Fatalf("killed %q, want B's reset", victim)
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{Backup: true}, 3)
	testmail.Converged(t, a, b)
	s := testmail.Sync(t, a, b, session.Options{Backup: true})
	if n := s.ResultB.Added + s.ResultB.Expunged + s.ResultB.Flagged + s.ResultB.Moved + s.ResultB.MailboxOps; n != 0 {
		t.Fatalf("second backup did %d things: %+v", n, s.ResultB)
	}
	if files := testmail.Files(t, b, "INBOX"); len(files) != 1 || testmail.Find(t, b, "INBOX", m1) == "" {
		t.Fatalf("B INBOX %v, want M1 only", files)
	}
}

// A mailbox whose UIDVALIDITY changed on one side to a lower one (its
// uidlist made again by hand, same GUID) is void there (the higher one
// wins): that side adopts it under the other side's UIDVALIDITY, From == To. Killed after the uidlist rewrite, the
// next scan completes it from the journal: the records move to their new
// UIDs with their Born stamps (without the journal the scan took the new
// UIDVALIDITY for a reset and stamped them born now), nothing lost, and
// the replicas converge.
func TestKilledVoidAdoptSameGUIDConverges(t *testing.T) {
	a, b := testmail.Roots(t)
	m1 := testmail.Deliver(t, a, "Work", "M1")
	m2 := testmail.Deliver(t, a, "Work", "M2")
	settle(t, a, b)
	ul := testmail.Uidlist(t, b, "Work")
	ul.UIDValidity -= 1000
	if err := maildir.WriteUidlist(testmail.Dir(t, b, "Work"), ul); err != nil {
		t.Fatal(err)
	}
	before := borns(t, b, "Work") // (as B's index knows them now)
	victim := killedSync(t, a, b, session.Options{}, func(dir string, rewrite bool) bool { return rewrite })
	if victim != b {
		t.Fatalf("killed %q, want B's adopt", victim)
	}
	if got, want := testmail.Uidlist(t, b, "Work").UIDValidity, testmail.Uidlist(t, a, "Work").UIDValidity; got != want {
		t.Fatalf("the kill came before the rewrite: B's UIDVALIDITY %d, A's %d", got, want)
	}
	// The scan after the kill completes the adopt: the instances keep
	// their Born (re-read as new records, they were stamped now).
	if after := borns(t, b, "Work"); !maps.Equal(after, before) || len(after) != 2 {
		t.Errorf("Born stamps on B before %v, after the killed adopt %v", before, after)
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 3)
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "Work"}, a, b)
	for _, r := range []string{a, b} {
		if files := testmail.Files(t, r, "Work"); len(files) != 2 || testmail.Find(t, r, "Work", m1) == "" || testmail.Find(t, r, "Work", m2) == "" {
			t.Errorf("%s Work %v, want M1 and M2", r, files)
		}
	}
}

// A merge of "Work" killed after B's uidlist took the winner's GUID, and a
// client renames the folder on B before the next sync: the scan finds the
// winner's uidlist in the renamed directory and completes the merge there
// (the rename then replicates as a rename of the merged mailbox).
func TestKilledMergeThenRenamedConverges(t *testing.T) {
	a, b := testmail.Roots(t)
	// A's Work handed out more UIDs: it is the keeper, B adopts it.
	testmail.Deliver(t, a, "Work", "A1")
	testmail.Deliver(t, a, "Work", "A2")
	testmail.Deliver(t, b, "Work", "B1")
	// (Each side's first scan makes an INBOX of its own too: one side
	// adopts the other's, not necessarily before Work. Only Work is
	// killed.)
	victim := killedSync(t, a, b, session.Options{}, func(dir string, rewrite bool) bool { return rewrite && filepath.Base(dir) == ".Work" })
	if victim != b {
		t.Fatalf("killed %q, want B's adopt", victim)
	}
	if testmail.Uidlist(t, b, "Work").GUID != testmail.Uidlist(t, a, "Work").GUID {
		t.Fatal("the kill came before the uidlist rewrite")
	}
	testmail.Rename(t, b, "Work", "Renamed")
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 3)
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "Renamed"}, a, b)
	for _, r := range []string{a, b} {
		if n := len(testmail.Files(t, r, "Renamed")); n != 3 {
			t.Errorf("%s Renamed holds %d messages, want 3", r, n)
		}
	}
}
