package session_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// atApply is a replica that calls f as its Apply starts.
type atApply struct {
	replica.Replica
	f func()
}

func (a *atApply) Apply(ctx context.Context, plan *merge.SidePlan, src replica.BodySource) (*replica.ApplyResult, error) {
	a.f()
	return a.Replica.Apply(ctx, plan, src)
}

// TestKilledRenumberingAfterItsUidlistKeepsTheMessage: m1 on A and m3 on
// B (Dovecot saved it as B's apply started) took one UID of INBOX, so a
// sync renumbers both (§3.3): A gives m1 a new UID under a new base name
// (its GUID in the uidlist's G field), B gets m1 at that UID. A's apply is
// killed after its uidlist names m1's new file, before its index records
// it. At the next Open the renumber journal finds the new name listed and
// keeps the rename. The next scan (which reads INBOX's cur/ twice, m1's
// old name being listed without a file, and whose second reading misses
// m1's file: Dovecot sets \Flagged on it meanwhile) must read that file at
// its new UID as m1 renumbered, not as an expunge of the old UID plus a
// new copy: that expunge reached B's m1, B's expunge then reached A's
// copy, and m1 was lost (property seed 3591389808104507867,
// TestPropertyKilledApplies with class 1 in the draws; fixed by 738d0c7,
// index Replica.renumbered from the journal's completed renames; with its
// scan condition reverted this test loses m1, on main 8b5503c too). m1
// survives, at one UID on both replicas. The steps are the seed's shrunk
// history. With "open-without-scan", A is opened and closed once between
// the kill and that scan (a sync whose peer failed before A's scan): the
// journal's renames must survive it (they were replayed into memory only
// and lost, and m1 with them, until the scan of the mailbox cleared them).
func TestKilledRenumberingAfterItsUidlistKeepsTheMessage(t *testing.T) {
	for _, reopen := range []bool{false, true} {
		t.Run(map[bool]string{false: "next-open-scans", true: "open-without-scan"}[reopen], func(t *testing.T) { killedRenumbering(t, reopen) })
	}
}

func killedRenumbering(t *testing.T, reopen bool) {
	a, b := testmail.Roots(t)
	ctx := context.Background()
	open := func(root string, o index.Options) *index.Replica {
		o.LockTimeout = 10 * time.Second
		r, err := index.Open(ctx, testmail.Loc(root), o)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	testmail.Deliver(t, a, "Work", "first") // (both roots made)
	testmail.Settle(t, a, b)
	inboxA, inboxB := testmail.Dir(t, a, "INBOX"), testmail.Dir(t, b, "INBOX")

	// m1 on A; Dovecot saves m2 on A after A's scan (A's index never
	// sees its UID in this sync) and m3 on B as B's apply starts, at the
	// UID the plan gives m1 there: B's add of m1 waits.
	m1 := testmail.Deliver(t, a, "INBOX", "m1")
	ra, rb := open(a, index.Options{}), open(b, index.Options{})
	m2, m3 := "", ""
	_, err := session.Run(ctx,
		&afterBegin{ra, func() { m2, _ = saveAtNextUID(t, inboxA, "1700000002.M2P2.dovecot", "m2") }},
		&atApply{rb, func() { m3, _ = saveAtNextUID(t, inboxB, "1700000003.M3P2.dovecot", "m3") }},
		session.Options{})
	ra.Close()
	rb.Close()
	if err != nil {
		t.Fatal(err)
	}

	// The sync that renumbers: Dovecot moves m1 from new/ to cur/ after A's
	// scan; A's apply dies after its uidlist names m1's new file.
	at := ""
	ra = open(a, index.Options{BeforeBoxCommit: func(dir string, rewrite bool) {
		if at != "" || rewrite || filepath.Clean(dir) != filepath.Clean(inboxA) {
			return
		}
		for _, rec := range testmail.Uidlist(t, a, "INBOX").Records {
			if g, _ := rec.Get('G'); g == m1 && rec.Base() != m1 {
				at = rec.Base()
				panic(errKilled)
			}
		}
	}})
	rb = open(b, index.Options{})
	_, err = session.Run(ctx, &dying{Replica: &afterBegin{ra, func() {
		if err := os.Rename(filepath.Join(inboxA, "new", m1), filepath.Join(inboxA, "cur", m1+":2,")); err != nil {
			t.Fatal(err)
		}
	}}}, rb, session.Options{})
	ra.Close()
	rb.Close()
	if at == "" {
		t.Fatalf("A's apply did not renumber m1 (sync: %v): the scenario did not happen", err)
	}

	if reopen {
		open(a, index.Options{}).Close()
	}
	// The next sync: A's first listing of INBOX's cur/ misses m1's file
	// (Dovecot sets \Flagged on it meanwhile), and Dovecot saves m4 after
	// A's scan.
	missed := false
	listings := 0
	restore := index.SetListingHook(func(dir, sub string, names []string) []string {
		if missed || sub != "cur" || filepath.Clean(dir) != filepath.Clean(inboxA) {
			return names
		}
		if listings++; listings == 1 {
			return names // (the scan's first reading sees it)
		}
		out := names[:0:0]
		for _, n := range names {
			if strings.HasPrefix(n, at+":") {
				missed = true
				if err := os.Rename(filepath.Join(dir, "cur", n), filepath.Join(dir, "cur", n+"F")); err != nil {
					t.Fatal(err)
				}
				continue
			}
			out = append(out, n)
		}
		return out
	})
	ra, rb = open(a, index.Options{}), open(b, index.Options{})
	_, err = session.Run(ctx, rb, &afterBegin{ra, func() { saveAtNextUID(t, inboxA, "1700000004.M4P2.dovecot", "m4") }}, session.Options{})
	ra.Close()
	rb.Close()
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !missed {
		t.Fatal("no listing missed m1's renamed file: the scenario did not happen")
	}

	testmail.SyncUntilQuiet(t, b, a, session.Options{}, 4)
	testmail.Converged(t, a, b)
	testmail.AssertIdle(t, a, b)
	for _, m := range []string{m1, m2, m3} {
		uids := map[string][]uint32{}
		for _, r := range []string{a, b} {
			for uid, id := range testmail.UIDs(t, r, "INBOX") {
				if id == m {
					uids[r] = append(uids[r], uid)
				}
			}
		}
		if len(uids[a]) != 1 || len(uids[b]) != 1 || uids[a][0] != uids[b][0] {
			t.Errorf("%s: at UIDs %v on A and %v on B, want one UID on both (A holds %s; B %s)", m, uids[a], uids[b],
				strings.Join(testmail.Files(t, a, "INBOX"), " "), strings.Join(testmail.Files(t, b, "INBOX"), " "))
		}
	}
}
