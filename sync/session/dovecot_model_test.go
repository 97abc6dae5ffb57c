package session_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// dovecotView models what a running Dovecot remembers of one root from
// having read its uidlists at some moments: its index lives in the mailbox
// directory (so it follows the directory through renames and dies with it),
// and per UIDVALIDITY it holds the highest NEXTUID it saw and the message
// it saw at each UID. Dovecot 2.3 logs "Expunged message reappeared, giving
// a new UID" (and gives the file another UID) when a uidlist later lists a
// UID below that NEXTUID that its index does not hold, and an error when
// NEXTUID goes down; a UID that names another file than before is a UID
// that changed its meaning for every client.
type dovecotView struct {
	idx map[dvKey]*dvIndex
}

// dvKey is one Dovecot index: the mailbox directory (by inode) and the
// UIDVALIDITY it was built for (a new UIDVALIDITY resets it).
type dvKey struct {
	ino  uint64
	uidv uint32
}

type dvIndex struct {
	dir  string // where it was last seen
	next uint32
	uids map[uint32]string // UID -> base name
}

func newDovecotView() *dovecotView { return &dovecotView{idx: map[dvKey]*dvIndex{}} }

// observe reads every uidlist under root as Dovecot would when a client
// opens the mailbox, and returns what Dovecot would complain about.
// Indexes of directories that are gone are forgotten.
func (v *dovecotView) observe(root string) ([]string, error) {
	ds, err := testmail.Loc(root).ListMailboxes()
	if errors.Is(err, fs.ErrNotExist) {
		v.idx = map[dvKey]*dvIndex{}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var problems []string
	live := map[dvKey]bool{}
	for _, d := range ds {
		fi, err := os.Stat(d.Dir)
		if err != nil {
			continue // gone meanwhile
		}
		ul, _, err := maildir.ReadUidlist(d.Dir)
		if err != nil {
			continue // no uidlist yet (Dovecot would write one)
		}
		k := dvKey{ino: fi.Sys().(*syscall.Stat_t).Ino, uidv: ul.UIDValidity}
		live[k] = true
		ix := v.idx[k]
		if ix == nil {
			ix = &dvIndex{uids: map[uint32]string{}}
			v.idx[k] = ix
		}
		ix.dir = d.Name
		for _, rec := range ul.Records {
			base := rec.Base()
			old, had := ix.uids[rec.UID]
			switch {
			case had && old != base:
				problems = append(problems, fmt.Sprintf("mailbox %q (UIDVALIDITY %d): UID %d named %s, now %s", d.Name, ul.UIDValidity, rec.UID, old, base))
			case !had && rec.UID < ix.next:
				problems = append(problems, fmt.Sprintf("mailbox %q (UIDVALIDITY %d): UID %d (%s) appeared below the NEXTUID %d Dovecot had seen: \"Expunged message reappeared\"", d.Name, ul.UIDValidity, rec.UID, base, ix.next))
			}
			ix.uids[rec.UID] = base
		}
		if ul.NextUID < ix.next {
			problems = append(problems, fmt.Sprintf("mailbox %q (UIDVALIDITY %d): next_uid was lowered (%d -> %d)", d.Name, ul.UIDValidity, ix.next, ul.NextUID))
		}
		ix.next = max(ix.next, ul.NextUID)
	}
	for k := range v.idx {
		if !live[k] {
			// The directory is gone (its index with it), or it now holds
			// another UIDVALIDITY (Dovecot resets its index for it).
			delete(v.idx, k)
		}
	}
	sort.Strings(problems)
	return problems, nil
}

// watching is a replica whose Fetch (the peer pulling bodies during its
// apply, after its mailbox creates and before its adds) first lets
// Dovecot look at the roots.
type watching struct {
	replica.Replica
	look func()
}

func (w *watching) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	w.look()
	return w.Replica.Fetch(ctx, refs, fn)
}

// syncWatched syncs a and b in process while a Dovecot on each root looks
// at the uidlists before the sync, whenever a body is pulled, and after.
// It fails the test on anything Dovecot would complain about.
func syncWatched(t *testing.T, a, b string, va, vb *dovecotView) *session.Summary {
	t.Helper()
	var problems []string
	look := func() {
		for _, x := range []struct {
			root string
			v    *dovecotView
		}{{a, va}, {b, vb}} {
			p, err := x.v.observe(x.root)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range p {
				problems = append(problems, x.root+": "+s)
			}
		}
	}
	look()
	open := func(root string) *index.Replica {
		r, err := index.Open(context.Background(), testmail.Loc(root), index.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ra, rb := open(a), open(b)
	sum, err := session.Run(context.Background(), &watching{ra, look}, &watching{rb, look}, session.Options{})
	ra.Close()
	rb.Close()
	if err != nil {
		t.Fatal(err)
	}
	look()
	if len(problems) > 0 {
		t.Fatalf("Dovecot would complain:\n  %s", joinLines(problems))
	}
	return sum
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}

// TestCreatedMailboxNextUIDNotAboveItsAdds: a mailbox that a sync creates
// (here: new on A; and made again on B after B deleted it while A got mail
// that B never saw) is written first, its messages are added later in the
// same apply, after their bodies were pulled from the peer. A Dovecot that
// opens the new mailbox in between must not see a NEXTUID above the UIDs
// still to come: it would take them for expunged messages that reappeared
// and give them new UIDs (issue 3's stress test: "Expunged message
// reappeared" in a folder created by a sync, and the folder's UIDs then
// differing between A and B).
func TestCreatedMailboxNextUIDNotAboveItsAdds(t *testing.T) {
	a, b := roots(t)
	va, vb := newDovecotView(), newDovecotView()
	testmail.Deliver(t, a, "INBOX", "first")
	syncWatched(t, a, b, va, vb)

	// A new folder with mail, created on B by the sync.
	testmail.Deliver(t, a, "S1", "one")
	testmail.Deliver(t, a, "S1", "two")
	syncWatched(t, a, b, va, vb)
	testmail.Converged(t, a, b)

	// B deletes it; meanwhile A gets mail in it that B never saw: the
	// sync makes it again on B (same GUID and UIDVALIDITY) and adds that
	// mail (contract §5).
	testmail.DeleteWithIntent(t, b, "S1")
	testmail.Deliver(t, a, "S1", "three")
	syncWatched(t, a, b, va, vb)
	testmail.Converged(t, a, b)
	if got := len(testmail.UIDs(t, b, "S1")); got == 0 {
		t.Fatalf("S1 not made again on B")
	}
	syncWatched(t, a, b, va, vb)
}

// dovecotFolder makes folder name on root as Dovecot does when a client
// creates it and appends messages: a uidlist of its own (GUID and
// UIDVALIDITY given), the messages listed at UIDs 1, 2, ..., and NEXTUID
// next (UIDs between the last one and next were expunged). It returns the
// messages' base names by UID.
func dovecotFolder(t *testing.T, root, name string, uidv uint32, next uint32, bodies ...string) map[uint32]string {
	t.Helper()
	out := map[uint32]string{}
	ul := &maildir.Uidlist{Version: 3, UIDValidity: uidv, NextUID: next, GUID: maildir.NewGUID()}
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, root, name)); err != nil {
		t.Fatal(err)
	}
	for i, b := range bodies {
		base := testmail.Deliver(t, root, name, b)
		u := uint32(i + 1)
		out[u] = base
		ul.Records = append(ul.Records, maildir.UidRecord{UID: u, FileName: base})
	}
	if err := maildir.WriteUidlist(testmail.Dir(t, root, name), ul); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMergedFoldersWithOneUIDValidity: a folder created on both sides and
// merged (contract §3.4) where both sides' Dovecots gave it the same
// UIDVALIDITY (they take it from the clock, so two folders made in the same
// second get the same one; issue 3's stress test made them by the dozen).
// The adopting side's Dovecot then keeps its index (no UIDVALIDITY change):
// no UID it used may name another message. Here its Dovecot takes UIDs 3
// and 4 for two messages a client appends and expunges while the sync
// runs, after the scan: the adopt used to rewrite the uidlist as if the
// UIDs started afresh (NEXTUID from the plan, 4, and the peer's message
// added at UID 4): Dovecot would see NEXTUID lowered and an expunged
// message reappear.
func TestMergedFoldersWithOneUIDValidity(t *testing.T) {
	a, b := roots(t)
	va, vb := newDovecotView(), newDovecotView()
	testmail.Deliver(t, a, "INBOX", "first")
	syncWatched(t, a, b, va, vb)

	const uidv = 1795881311
	dovecotFolder(t, a, "S1", uidv, 3)             // empty, UIDs 1, 2 expunged: merges into B's
	ub := dovecotFolder(t, b, "S1", uidv, 4, "b1") // UIDs 2, 3 expunged
	dirA := testmail.Dir(t, a, "S1")
	appended := 0
	dovecotAppendsAndExpunges := func() {
		// What Dovecot on A does for a client's APPEND then EXPUNGE in S1,
		// once, while A's apply pulls b1 from B (after the scan, before
		// A's S1 is rewritten).
		if appended > 0 {
			return
		}
		lk, err := maildir.LockUidlist(context.Background(), dirA, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Unlock()
		ul, _, err := maildir.ReadUidlist(dirA)
		if err != nil {
			t.Fatal(err)
		}
		ul.NextUID += 2 // two messages appended, then expunged
		if err := maildir.WriteUidlist(dirA, ul); err != nil {
			t.Fatal(err)
		}
		appended = 2
	}
	var problems []string
	look := func() {
		for _, x := range []struct {
			root string
			v    *dovecotView
		}{{a, va}, {b, vb}} {
			p, err := x.v.observe(x.root)
			if err != nil {
				t.Fatal(err)
			}
			problems = append(problems, p...)
		}
	}
	look()
	open := func(root string) *index.Replica {
		r, err := index.Open(context.Background(), testmail.Loc(root), index.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ra, rb := open(a), open(b)
	// B applies first (nothing to pull), then A pulls b1 from B.
	sum, err := session.Run(context.Background(), &watching{ra, look}, &watching{rb, func() { look(); dovecotAppendsAndExpunges(); look() }}, session.Options{})
	ra.Close()
	rb.Close()
	if err != nil {
		t.Fatal(err)
	}
	look()
	if appended == 0 {
		t.Fatalf("A did not pull b1 from B: plan %+v", sum.Plan)
	}
	if len(problems) > 0 {
		t.Fatalf("Dovecot would complain:\n  %s", joinLines(problems))
	}
	if n := testmail.Uidlist(t, a, "S1").NextUID; n < 5 {
		t.Fatalf("A's S1 NEXTUID %d, below the 5 its Dovecot reached", n)
	}
	// The next syncs converge; b1 never takes a UID A's Dovecot used.
	syncWatched(t, a, b, va, vb)
	syncWatched(t, a, b, va, vb)
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
	if v := testmail.Uidlist(t, a, "S1").UIDValidity; v != uidv {
		t.Fatalf("UIDVALIDITY %d, want %d", v, uidv)
	}
	for u, g := range testmail.UIDs(t, a, "S1") {
		if g == ub[1] && u < 5 {
			t.Errorf("b1 at UID %d on A, below the NEXTUID 5 A's Dovecot reached", u)
		}
	}
}
