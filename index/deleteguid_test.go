package index_test

import (
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestDeleteSparesAFolderRenamedIntoItsName: A deletes S2; before B's
// apply of that delete locks B's S2, B's clients DELETE S2 and RENAME
// (empty) S1 to S2. The directory the delete found now holds another
// mailbox: the delete must leave it alone (the stress test saw twinbox
// remove it, failing a client's APPEND into it, and the rename was lost).
func TestDeleteSparesAFolderRenamedIntoItsName(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "S1", "in S1")
	testmail.Deliver(t, a, "S2", "in S2")
	settle(t, a, b)
	testmail.Expunge(t, a, "S1", m)
	settle(t, a, b)
	if n := len(testmail.Files(t, b, "S1")); n != 0 {
		t.Fatalf("B's S1 holds %d messages; want it empty", n)
	}
	y := testmail.Uidlist(t, b, "S1").GUID

	testmail.DeleteWithIntent(t, a, "S2")
	restore := index.SetTestHookBeforeDeleteLock(func(dir string) {
		if strings.HasPrefix(dir, b) {
			testmail.DeleteWithIntent(t, b, "S2")
			testmail.Rename(t, b, "S1", "S2")
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if got := testmail.Uidlist(t, b, "S2").GUID; got != y {
		t.Fatalf("B's S2 holds mailbox %x after the sync; want the renamed S1 %x", got, y)
	}
	for i := 0; ; i++ {
		if s := testmail.Sync(t, a, b, session.Options{}); !s.Changed {
			break
		}
		if i == 3 {
			t.Fatal("no convergence")
		}
	}
	testmail.Converged(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "S2"}, a, b)
	if got := testmail.Uidlist(t, a, "S2").GUID; got != y {
		t.Errorf("A's S2 holds mailbox %x; want the renamed S1 %x", got, y)
	}
}
