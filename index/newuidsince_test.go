package index_test

import (
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestUIDGivenOutBetweenScanAndApplyReaches: A's Box has a higher NEXTUID
// than B's (Dovecot gave out UIDs there whose messages were expunged), so
// the sync raises B's NEXTUID. Between B's scan and B's apply, Dovecot on
// B saves a message under B's old NEXTUID: below the UIDNEXT the sync
// makes common. That sync must not save its state (the message is not in
// B's index yet); else the next sync took B's report of the message, below
// the common UIDNEXT and not reported by A, for one A has too, and A never
// got it (the IMAP stress saw "UID 11 only on B" after an idle sync).
func TestUIDGivenOutBetweenScanAndApplyReaches(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, b, "Box", "m0")
	settle(t, a, b)
	ul := testmail.Uidlist(t, a, "Box")
	ul.NextUID = 10
	if err := maildir.WriteUidlist(testmail.Dir(t, a, "Box"), ul); err != nil {
		t.Fatal(err)
	}

	var x string
	restore := index.SetTestHookBeforeApplyBox(func(root string) {
		if x != "" || !strings.HasPrefix(root, b) {
			return
		}
		// Dovecot on B: a new message, numbered under the uidlist lock.
		x = testmail.Deliver(t, b, "Box", "saved by a client of B")
		dir := testmail.Dir(t, b, "Box")
		u, _, err := maildir.ReadUidlist(dir)
		if err != nil {
			t.Fatal(err)
		}
		u.Records = append(u.Records, maildir.UidRecord{UID: u.NextUID, FileName: x})
		u.NextUID++
		if err := maildir.WriteUidlist(dir, u); err != nil {
			t.Fatal(err)
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if x == "" {
		t.Fatal("the hook did not run: B's Box was not applied")
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
	if testmail.Find(t, a, "Box", x) == "" {
		t.Fatalf("the message B's client saved during the sync never reached A")
	}
}
