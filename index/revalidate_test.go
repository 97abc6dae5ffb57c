package index_test

import (
	"path/filepath"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// A mailbox that a sync gives a new UIDVALIDITY in place (sync/merge's
// revalidate: A made S2 with the name and UIDVALIDITY of a folder B
// deleted) gets a message from A's Dovecot between A's scan and A's
// apply. The in-place adopt rewrites the uidlist under the new value: the
// message Dovecot saved must stay (with its record), and the next syncs
// bring it to B.
func TestSaveDuringInPlaceNewUIDValidityIsKept(t *testing.T) {
	a, b := roots(t)
	const old = 1_000_000
	testmail.MakeMailbox(t, b, "S2", old)
	testmail.Deliver(t, b, "S2", "in B's S2")
	untilQuiet(t, a, b)
	testmail.DeleteWithIntent(t, b, "S2")
	untilQuiet(t, a, b)

	testmail.MakeMailbox(t, a, "S2", old)
	first := testmail.Deliver(t, a, "S2", "in A's S2")
	testmail.Sync(t, a, filepath.Join(t.TempDir(), "scratch"), session.Options{}) // UID 1 on A

	var saved string
	restore := index.SetTestHookBeforeApplyBox(func(root string) {
		if root == a && saved == "" {
			saved = dovecotSave(t, a, "S2", "1795000000.M1P1.saved", "S", "saved by Dovecot mid-sync")
		}
	})
	s, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if saved == "" {
		t.Fatal("A's apply never reached S2")
	}
	if len(s.Revalidated) != 1 {
		t.Fatalf("revalidated %v, want S2", s.Revalidated)
	}
	ul := testmail.Uidlist(t, a, "S2")
	if ul.UIDValidity == old {
		t.Fatalf("A's S2 kept UIDVALIDITY %d", old)
	}
	untilQuiet(t, a, b)
	for _, r := range []string{a, b} {
		if testmail.Find(t, r, "S2", first) == "" || testmail.Find(t, r, "S2", saved) == "" {
			t.Fatalf("%s S2: %v, want %s and %s", r, testmail.Files(t, r, "S2"), first, saved)
		}
		if v := testmail.Uidlist(t, r, "S2").UIDValidity; v != ul.UIDValidity {
			t.Fatalf("%s S2 UIDVALIDITY %d, A's after the sync %d", r, v, ul.UIDValidity)
		}
	}
}
