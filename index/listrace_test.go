package index_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestFileMovedToCurDuringListingStays: a client opens A's Box while a
// scan reads it, and Dovecot moves a message from new/ to cur/ after the
// scan read cur/ and before it read new/: the message is in neither
// reading. The scan must not take it for expunged (the IMAP stress saw
// such messages go unsent, and known ones would be expunged on the peer).
func TestFileMovedToCurDuringListingStays(t *testing.T) {
	// What the scan reads right after a sync (racyWindow re-reads the
	// directories that sync just wrote): as if the file clock had moved on.
	defer index.SetTestRacyWindow(0)()
	a, b := roots(t)
	m := testmail.Deliver(t, a, "Box", "m")
	settle(t, a, b)
	uid := uidOfBase(t, a, "Box", m)
	// Dovecot rewrote the uidlist since (no new file: those would make
	// the scan list the directories again to number them): the next scan
	// reads Box in full.
	ul := testmail.Uidlist(t, a, "Box")
	if err := maildir.WriteUidlist(testmail.Dir(t, a, "Box"), ul); err != nil {
		t.Fatal(err)
	}

	moved := false
	restore := index.SetTestHookBetweenListings(func(dir string) {
		if moved || !strings.HasPrefix(dir, a) {
			return
		}
		moved = true
		if err := os.Rename(filepath.Join(dir, "new", m), filepath.Join(dir, "cur", m+":2,")); err != nil {
			t.Fatal(err)
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !moved {
		t.Fatal("the hook did not run")
	}
	if testmail.Find(t, b, "Box", m) == "" {
		t.Fatal("B lost the message A's Dovecot moved to cur/ during the scan")
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
	for _, r := range []string{a, b} {
		if got := uidOfBase(t, r, "Box", m); got != uid {
			t.Errorf("%s: the message is at UID %d; want %d, as before", r, got, uid)
		}
	}
}

func uidOfBase(t *testing.T, root, mailbox, base string) uint32 {
	t.Helper()
	for u, b := range testmail.UIDs(t, root, mailbox) {
		if b == base {
			return u
		}
	}
	t.Fatalf("%s: no %s in %s's uidlist", root, base, mailbox)
	return 0
}
