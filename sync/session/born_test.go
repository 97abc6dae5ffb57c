package session_test

// Born stamps that are not invented (docs/design.md §4.2, §5.4, §6.7, §9
// item 9): a replica whose index was lost and rebuilt does not stamp the
// messages it finds "born now".

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// putBack moves message m from folder src back into folder dst on root, as
// a client's MOVE does in Maildir (a hard link under the same base name,
// then an unlink): the copy keeps its GUID.
func putBack(t *testing.T, root, src, dst, m string) {
	t.Helper()
	p := testmail.Find(t, root, src, m)
	if p == "" {
		t.Fatalf("%s: no %s in %s", root, m, src)
	}
	if err := os.Link(p, filepath.Join(testmail.Dir(t, root, dst), "cur", filepath.Base(p))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

// Three replicas hold M in INBOX. C expunges it; B learns of the expunge,
// and then a client on B puts M back into INBOX (from a folder it had
// copied it to): a new instance, born after the expunge. A's index is lost
// after that and rebuilt from the disk. A's copy of M is the instance C
// expunged, but the rebuilt index must not stamp it born now: its expunge
// would then carry the later stamp and kill B's put-back copy when A syncs
// with B. Two ways for A's M to go: C's expunge reaches it (A syncs with C
// first), or a client on A expunges it before A syncs at all. The put-back
// copy must survive everywhere.
func TestRebuiltIndexExpungeSparesPutBackCopy(t *testing.T) {
	for _, local := range []bool{false, true} {
		name := "expunge from C"
		if local {
			name = "expunge on A"
		}
		t.Run(name, func(t *testing.T) { rebuiltIndexPutBack(t, local) })
	}
}

func rebuiltIndexPutBack(t *testing.T, localExpunge bool) {
	a, b, c := testmail.Roots3(t)
	m := testmail.Deliver(t, a, "INBOX", "M")
	sync2(t, a, b)
	sync2(t, b, c)
	sync2(t, a, c)
	// B's client keeps a copy of M in Keep.
	keep := testmail.Dir(t, b, "Keep")
	if err := maildir.CreateMailboxDirs(keep); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(testmail.Find(t, b, "INBOX", m), filepath.Join(keep, "cur", m+":2,")); err != nil {
		t.Fatal(err)
	}
	scan(t, b)
	// C expunges M; B applies the expunge.
	testmail.Expunge(t, c, "INBOX", m)
	sync2(t, b, c)
	if slices.Contains(testmail.Files(t, b, "INBOX"), m) {
		t.Fatal("B did not apply C's expunge")
	}
	// B's client puts M back into INBOX: a copy born after the expunge.
	putBack(t, b, "Keep", "INBOX", m)
	scan(t, b)
	// A loses its index; its next scan rebuilds it from the disk.
	if err := os.Remove(filepath.Join(a, index.DBName)); err != nil {
		t.Fatal(err)
	}
	scan(t, a)
	if localExpunge {
		testmail.Expunge(t, a, "INBOX", m)
	} else {
		sync2(t, a, c) // A's M is the instance C expunged: it goes
		if slices.Contains(testmail.Files(t, a, "INBOX"), m) {
			t.Fatal("A did not apply C's expunge")
		}
	}
	sync2(t, a, b) // B's put-back copy must stay
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

// borns returns the Born stamps of the records of mailbox name on root, by
// message GUID (after a scan).
func borns(t *testing.T, root, name string) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	r, err := index.Open(ctx, maildir.Location{Root: root}, index.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	br, err := r.Begin(ctx, replica.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var g model.MailboxGUID
	for _, mb := range br.Mailboxes {
		if mb.Name == name && !mb.Deleted {
			g = mb.GUID
		}
	}
	ch, err := r.Changes(ctx, replica.ChangesRequest{Boxes: []replica.BoxSince{{GUID: g}}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	if c := ch[g]; c != nil {
		for _, m := range c.Messages {
			out[m.GUID] = m.Born
		}
	}
	return out
}

// A rebuilt index stamps the messages it finds listed as born at or before
// the rebuild (unsure, negative: model/born.go), not as born then, and
// learns their stamps at the next sync from a peer that holds the same UID
// and GUID; a message the rebuilding scan gives its UID, or one delivered
// after the rebuild, is born then (known). The learning changes no file
// (the sync after is idle).
func TestRebuiltIndexLearnsBornFromPeer(t *testing.T) {
	a, b := roots(t)
	m1 := testmail.Deliver(t, a, "INBOX", "one")
	m2 := testmail.Deliver(t, a, "Work", "two")
	settle(t, a, b)
	want := borns(t, b, "INBOX")[m1]
	if want == 0 {
		t.Fatal("B's record has no Born")
	}
	if err := os.Remove(filepath.Join(a, index.DBName)); err != nil {
		t.Fatal(err)
	}
	m3 := testmail.Deliver(t, a, "INBOX", "after the loss, before the rebuild")
	got := borns(t, a, "INBOX")
	if got[m1] >= 0 || -got[m1] < want {
		t.Fatalf("rebuilt index: %s born %d, want unsure (negative), at or after %d", m1, got[m1], want)
	}
	if got[m3] <= 0 {
		t.Fatalf("rebuilt index: %s (given its UID by the rebuilding scan) born %d, want known", m3, got[m3])
	}
	if w := borns(t, a, "Work")[m2]; w >= 0 {
		t.Fatalf("rebuilt index: Work's %s born %d, want unsure (negative)", m2, w)
	}
	m4 := testmail.Deliver(t, a, "INBOX", "after the rebuild")
	if b4 := borns(t, a, "INBOX")[m4]; b4 <= 0 {
		t.Fatalf("%s, delivered after the rebuild, born %d, want known", m4, b4)
	}
	settle(t, a, b)
	if got := borns(t, a, "INBOX")[m1]; got != want {
		t.Fatalf("after the sync A's %s is born %d, B's %d", m1, got, want)
	}
	if got, w := borns(t, a, "Work")[m2], borns(t, b, "Work")[m2]; got != w || got == 0 {
		t.Fatalf("after the sync A's Work %s is born %d, B's %d", m2, got, w)
	}
}
