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

// TestMessageSavedDuringQuickScanReaches: A's scan of Box takes the quick
// way (the uidlist as the index recorded it, a delivery in new/ without a
// UID), and Dovecot saves a message into Box (file into cur/, then its
// record and a higher NEXTUID into the uidlist) after the scan listed cur/.
// The scan numbers the delivery under the lock, reading the uidlist that
// now also lists Dovecot's message, whose file its listing missed. It must
// not record Box's UIDNEXT beyond the UIDs it has records of: the sync
// saves that UIDNEXT as the base both sides agree below, and the next
// sync, seeing the message at a UID below that base on A only, took it for
// one B has unchanged, so it never reached B (the IMAP stress: "mailbox
// Work UID 43 only on B" after syncs that reported nothing to do, and a
// sync that planned a flag change for such a message on B for ever,
// "message ... to flag not found", never converging).
func TestMessageSavedDuringQuickScanReaches(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Box", "first")
	settle(t, a, b)
	delivered := testmail.Deliver(t, a, "Box", "delivered by the MTA")

	dir := testmail.Dir(t, a, "Box")
	saved := ""
	restore := index.SetTestHookBetweenListings(func(d string) {
		if saved != "" || d != dir {
			return
		}
		// Dovecot's save, as it does it under its lock: the file into
		// cur/, then the record.
		tmpRoot := t.TempDir()
		m := testmail.Deliver(t, tmpRoot, "X", "saved by Dovecot meanwhile")
		body, err := os.ReadFile(filepath.Join(testmail.Dir(t, tmpRoot, "X"), "new", m))
		if err != nil {
			t.Fatal(err)
		}
		saved = "1790000000.M1P1.dovecot,S=" + strings.Split(m, ",S=")[1]
		if err := os.WriteFile(filepath.Join(d, "cur", saved+":2,S"), body, 0o600); err != nil {
			t.Fatal(err)
		}
		ul := testmail.Uidlist(t, a, "Box")
		ul.Records = append(ul.Records, maildir.UidRecord{UID: ul.NextUID, FileName: saved})
		ul.NextUID++
		if err := maildir.WriteUidlist(d, ul); err != nil {
			t.Fatal(err)
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if saved == "" {
		t.Fatal("the hook did not run")
	}
	for i := 0; ; i++ {
		s := testmail.Sync(t, a, b, session.Options{})
		if !s.Changed {
			break
		}
		if i == 4 {
			t.Fatalf("no convergence: %v %v", s.ResultA.Skipped, s.ResultB.Skipped)
		}
	}
	for _, m := range []string{delivered, saved} {
		if testmail.Find(t, b, "Box", m) == "" {
			t.Errorf("B never got %s", m)
		}
	}
	testmail.Converged(t, a, b)
}

// TestMessageMovedToCurDuringFullScanReaches: a full scan of A's Box lists
// a message Dovecot just saved into new/ (its record in the uidlist), and
// Dovecot moves it to cur/ (a client opened Box) before the scan reads the
// file's size: the scan leaves it for the next scan, and must then not
// record Box's UIDNEXT beyond it either (the base the sync saves would
// cover it and the next sync would take it for a message B has).
func TestMessageMovedToCurDuringFullScanReaches(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Box", "first")
	settle(t, a, b)
	// Dovecot's save: the file into new/, then its record.
	m := testmail.Deliver(t, a, "Box", "saved by Dovecot")
	dir := testmail.Dir(t, a, "Box")
	ul := testmail.Uidlist(t, a, "Box")
	ul.Records = append(ul.Records, maildir.UidRecord{UID: ul.NextUID, FileName: m})
	ul.NextUID++
	if err := maildir.WriteUidlist(dir, ul); err != nil {
		t.Fatal(err)
	}
	moved := false
	restore := index.SetTestHookAfterListing(func(d string) {
		if moved || d != dir {
			return
		}
		moved = true
		if err := os.Rename(filepath.Join(d, "new", m), filepath.Join(d, "cur", m+":2,")); err != nil {
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
	for i := 0; ; i++ {
		s := testmail.Sync(t, a, b, session.Options{})
		if !s.Changed {
			break
		}
		if i == 4 {
			t.Fatalf("no convergence: %v %v", s.ResultA.Skipped, s.ResultB.Skipped)
		}
	}
	if testmail.Find(t, b, "Box", m) == "" {
		t.Errorf("B never got %s", m)
	}
	testmail.Converged(t, a, b)
}
