package session_test

// Regression scripts for histories the property test found while three
// replicas were made to converge (issue 2, docs/design.md §9). Each names
// the seed that found it.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// A mailbox that dies in a sync (deleted with intent on one side) while its
// directory on the other side still holds a name that a mailbox created by
// the same sync takes: the dying one is renamed out of the way first (the
// create used to find the directory taken and the sync failed with "plan
// for unknown mailbox"; TWINBOX_PROP_REPLICAS=3 -rapid.seed=3, 262 cases).
func TestDyingMailboxMovesOutOfCreatedName(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Archive/2024", "m00")
	testmail.Deliver(t, a, "Work", "m01")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, b, "Work")
	testmail.Rename(t, b, "Archive/2024", "Work")
	scan(t, b)
	testmail.DeleteWithIntent(t, b, "Work")
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, b, "Archive/2024")); err != nil {
		t.Fatal(err)
	}
	settle(t, b, a)
	testmail.WantMailboxes(t, []string{"INBOX", "Archive/2024"}, a, b)
}

// A message lost with its folder's directory (rm -rf) and refilled from a
// third replica: the refill makes the folder's saved state with other
// peers stale (its epoch changes), since that state said "equal below the
// common UIDNEXT" while the UID was Lost here and empty there. The peer
// used to be assumed to have the refilled message and never got it
// (TWINBOX_PROP_REPLICAS=3 -rapid.seed=193756).
func TestRefillFromThirdReplicaReachesPeer(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, a, "Lists")); err != nil {
		t.Fatal(err)
	}
	m := testmail.Deliver(t, c, "Lists", "on C")
	sync2(t, c, b)
	if err := os.RemoveAll(testmail.Dir(t, b, "Lists")); err != nil {
		t.Fatal(err)
	}
	sync2(t, b, a) // B's Lists is refilled: empty, UID 1 Lost on B
	sync2(t, c, b) // B gets the message back from C
	sync2(t, b, a)
	for _, r := range []string{a, b} {
		if !slices.Contains(testmail.Files(t, r, "Lists"), m) {
			t.Fatalf("%s: the message is not in Lists", r)
		}
	}
	settle(t, a, b)
	settle(t, b, c)
	settle(t, a, c)
}

// A mailbox merged into another (the same name created on two replicas)
// leaves an alias on the side that adopted it: a third replica that still
// holds the old GUID is merged into the same winner, and a message
// expunged under the old GUID before the merge stays expunged (the
// adopting side used to drop the old GUID's tombstones).
func TestMergedMailboxAliasReachesThirdReplica(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	b1 := testmail.Deliver(t, b, "Lists", "b1")
	b2 := testmail.Deliver(t, b, "Lists", "b2")
	sync2(t, b, c)
	var onA []string
	for i := 0; i < 3; i++ { // A's Lists has handed out more UIDs: it wins
		onA = append(onA, testmail.Deliver(t, a, "Lists", fmt.Sprintf("a%d", i)))
	}
	testmail.Expunge(t, b, "Lists", b2)
	s := sync2(t, a, b)
	if len(s.Merged) == 0 {
		t.Fatal("A's and B's Lists were not merged")
	}
	wantGUID := testmail.Uidlist(t, a, "Lists").GUID
	s = sync2(t, b, c) // C still has B's old Lists, with b2
	if len(s.Merged) == 0 || !strings.Contains(s.Merged[0], "alias") {
		t.Fatalf("C's old Lists not merged through the alias: %v", s.Merged)
	}
	for i := 0; i < 2; i++ {
		sync2(t, a, b)
		sync2(t, b, c)
		sync2(t, c, a)
	}
	settle(t, a, b)
	settle(t, b, c)
	settle(t, a, c)
	// B and C both keep the alias: it is not compared again.
	if s := sync2(t, b, c); s.Full != 0 {
		t.Fatalf("an idle sync compared %d mailboxes in full", s.Full)
	}
	for _, r := range []string{a, b, c} {
		testmail.WantMailboxes(t, []string{"INBOX", "Lists"}, r)
		if g := testmail.Uidlist(t, r, "Lists").GUID; g != wantGUID {
			t.Fatalf("%s: Lists has GUID %x, want %x", r, g, wantGUID)
		}
		files := testmail.Files(t, r, "Lists")
		if slices.Contains(files, b2) {
			t.Fatalf("%s: the message expunged before the merge is back", r)
		}
		for _, m := range append([]string{b1}, onA...) {
			if !slices.Contains(files, m) {
				t.Fatalf("%s: %s lost", r, m)
			}
		}
	}
}

// A renumbering tombstone carries the Born of the instance it retired: a
// peer that has not heard of the renumbering still holds that instance
// under the old UID (an implied record in an incremental sync), and an
// expunge of the instance at its new UID must kill it there
// (TWINBOX_PROP_REPLICAS=3 -rapid.seed=46366).
func TestExpungeAfterRenumberReachesUnchangedPeer(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	testmail.Deliver(t, c, "INBOX", "common")
	sync2(t, a, c)
	sync2(t, b, c)
	m := testmail.Deliver(t, c, "INBOX", "on C at UID 2")
	sync2(t, b, c) // B and C: m at UID 2, saved state
	testmail.Deliver(t, a, "INBOX", "on A at UID 2")
	sync2(t, a, b) // UID 2 taken on both: m renumbered on B
	testmail.Expunge(t, a, "INBOX", m)
	sync2(t, a, b) // B expunges m at its new UID
	sync2(t, b, c) // C still has m at UID 2, unchanged since its last sync with B
	for _, r := range []string{b, c} {
		if slices.Contains(testmail.Files(t, r, "INBOX"), m) {
			t.Fatalf("%s: the expunged message is back", r)
		}
	}
	for i := 0; i < 2; i++ {
		sync2(t, a, b)
		sync2(t, b, c)
		sync2(t, c, a)
	}
	settle(t, a, b)
	settle(t, b, c)
	for _, r := range []string{a, b, c} {
		if slices.Contains(testmail.Files(t, r, "INBOX"), m) {
			t.Fatalf("%s: the expunged message is back", r)
		}
	}
}

// A message copied into a mailbox that already holds it under another file
// name (a uidlist record with a G field, and now a file whose base is that
// GUID): the file with the GUID as its base keeps the GUID, the other
// record falls back to its base, in the scan and in the apply alike (the
// scan used to give both records one GUID, and the peer refused the
// report; TWINBOX_PROP_REPLICAS=3 -rapid.seed=363385).
func TestSameGUIDTwiceInOneMailbox(t *testing.T) {
	a, b := roots(t)
	x := testmail.Deliver(t, a, "INBOX", "copy under another name")
	m := testmail.Deliver(t, a, "Work", "the message")
	settle(t, a, b)
	// INBOX's record of x says it is m (what a sync writes when m's base
	// name was taken there), and then a client copies m into INBOX.
	dir := testmail.Dir(t, a, "INBOX")
	ul := testmail.Uidlist(t, a, "INBOX")
	for i := range ul.Records {
		if strings.HasPrefix(ul.Records[i].FileName, x) {
			ul.Records[i].Set('G', m)
		}
	}
	if err := maildir.WriteUidlist(dir, ul); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(testmail.Find(t, a, "Work", m), filepath.Join(dir, "cur", filepath.Base(testmail.Find(t, a, "Work", m)))); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "INBOX"); len(got) != 2 {
			t.Fatalf("%s: INBOX holds %v, want both files", r, got)
		}
	}
	settle(t, b, a)
}

// Changes with a Lookup reports, whatever their modseq, the records and
// expunge tombstones of the asked message GUIDs in the asked mailbox, and
// nothing of other messages.
func TestChangesLookup(t *testing.T) {
	a, _ := roots(t)
	m1 := testmail.Deliver(t, a, "INBOX", "expunged")
	m2 := testmail.Deliver(t, a, "INBOX", "kept")
	m3 := testmail.Deliver(t, a, "INBOX", "not asked")
	scan(t, a)
	testmail.Expunge(t, a, "INBOX", m1)
	ctx := context.Background()
	r, err := index.Open(ctx, maildir.Location{Root: a}, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	br, err := r.Begin(ctx, replica.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var inbox model.MailboxGUID
	for _, mb := range br.Mailboxes {
		if mb.Name == "INBOX" {
			inbox = mb.GUID
		}
	}
	ch, err := r.Changes(ctx, replica.ChangesRequest{Lookup: []replica.BoxLookup{{GUID: inbox, Messages: []string{m1, m2, "unknown"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := ch[inbox]
	if c == nil || len(c.Messages) != 1 || c.Messages[0].GUID != m2 || len(c.Tombstones) != 1 || c.Tombstones[0].GUID != m1 || c.Tombstones[0].MovedTo != 0 {
		t.Fatalf("lookup of %s, %s: %+v (and not %s)", m1, m2, c, m3)
	}
	if c.Tombstones[0].Born == 0 {
		t.Fatal("the expunge tombstone has no Born")
	}
}

// A replica that never held a message, and got it from a third replica
// after the expunge elsewhere, learns of the expunge at its next sync with
// the replica that made it (per-GUID lookups: that replica reports its
// expunge however old, though the pair's saved state says "nothing
// changed there").
func TestNeverHeldMessageMeetsOldExpunge(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	testmail.Deliver(t, a, "INBOX", "common")
	sync2(t, a, b)
	sync2(t, b, c)
	m := testmail.Deliver(t, c, "INBOX", "on C")
	sync2(t, a, c) // A gets m
	testmail.Expunge(t, a, "INBOX", m)
	sync2(t, a, b) // B never held m: nothing to learn
	sync2(t, b, c) // B gets m from C
	sync2(t, a, b) // A's expunge reaches B's copy
	if slices.Contains(testmail.Files(t, b, "INBOX"), m) {
		t.Fatal("B kept the message A expunged")
	}
	sync2(t, b, c)
	for _, r := range []string{a, b, c} {
		if slices.Contains(testmail.Files(t, r, "INBOX"), m) {
			t.Fatalf("%s: the expunged message is back", r)
		}
	}
	settle(t, a, b)
	settle(t, b, c)
	settle(t, a, c)
}

// A mailbox merged through an alias, renamed on the replica that still
// holds it, and a new mailbox under that name on the other side: the
// merged one moves to its final name before the create (the create used to
// find the directory taken and the sync failed with "not in the index";
// TWINBOX_PROP_REPLICAS=3 -rapid.seed=6, case 846957, before per-replica
// clock skew was added to the property test).
func TestAliasMergeOutOfCreatedName(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	var want []string
	for i := 0; i < 3; i++ { // B's "a" has handed out more UIDs: it wins
		want = append(want, testmail.Deliver(t, b, "a", fmt.Sprintf("k%d", i)))
	}
	want = append(want, testmail.Deliver(t, c, "a", "x"))
	sync2(t, a, c)
	if s := sync2(t, a, b); len(s.Merged) == 0 {
		t.Fatal("A's and B's \"a\" were not merged")
	}
	testmail.Rename(t, c, "a", "Lists")
	l := testmail.Deliver(t, a, "Lists", "new Lists on A")
	s := sync2(t, c, a)
	if len(s.Merged) == 0 || !strings.Contains(s.Merged[0], "alias") {
		t.Fatalf("C's old \"a\" not merged through the alias: %v", s.Merged)
	}
	settle(t, a, b)
	settle(t, b, c)
	settle(t, a, c)
	for _, r := range []string{a, b, c} {
		testmail.WantMailboxes(t, []string{"INBOX", "Lists", "a"}, r)
		if !slices.Contains(testmail.Files(t, r, "Lists"), l) {
			t.Fatalf("%s: Lists lacks its message", r)
		}
		files := testmail.Files(t, r, "a")
		for _, m := range want {
			if !slices.Contains(files, m) {
				t.Fatalf("%s: %s lost from \"a\"", r, m)
			}
		}
	}
}

// After a replica lost its index, the scan stamps its messages born now:
// the same instance then has two Borns. An expunge of an older instance of
// the GUID on that replica must not kill the instance on a peer that holds
// it at the same UID (the idle sync after convergence expunged and re-added
// it; TWINBOX_PROP_REPLICAS=3 -rapid.seed=7, case 645823, before clock
// skew was added to the property test).
func TestRebuiltIndexBornKillsNoSameInstance(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	m00 := testmail.Deliver(t, b, "INBOX", "m00")
	sync2(t, b, c)
	// B moves m00 to Work (what Dovecot does: link, then unlink).
	src := testmail.Find(t, b, "INBOX", m00)
	if err := os.Link(src, filepath.Join(testmail.Dir(t, b, "Work"), "cur", filepath.Base(src))); err != nil {
		t.Fatal(err)
	}
	testmail.Expunge(t, b, "INBOX", m00)
	m01 := testmail.Deliver(t, c, "INBOX", "m01")
	testmail.Deliver(t, a, "INBOX", "m02")
	testmail.Deliver(t, a, "INBOX", "m03")
	testmail.DeleteWithIntent(t, b, "Work")
	sync2(t, b, c)
	sync2(t, b, c)
	testmail.Deliver(t, c, "INBOX", "m04")
	if err := os.Remove(filepath.Join(b, index.DBName)); err != nil {
		t.Fatal(err)
	}
	testmail.Expunge(t, c, "INBOX", m01)
	testmail.SetFlags(t, b, "INBOX", m01, "S")
	sync2(t, a, b)
	sync2(t, a, c)
	sync2(t, b, c)
	testmail.Converged(t, a, b)
	testmail.Converged(t, b, c)
	assertIdle(t, a, b)
	assertIdle(t, a, c)
	assertIdle(t, b, c)
}
