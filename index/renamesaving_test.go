package index_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestRenameWaitsForASave: A renames S1 to S3 while a client of B is
// saving a message into S1 (Dovecot's file in S1/tmp, written just now).
// Moving B's S1 then would fail that APPEND (Dovecot: "Mailbox was deleted
// under us" and "unlink(.../tmp/...) failed", seen in the IMAP stress): the
// sync leaves S1 where it is and says "run again"; once the save is done,
// the next sync renames it.
func TestRenameWaitsForASave(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "S1", "in S1")
	settle(t, a, b)
	testmail.Rename(t, a, "S1", "S3")
	saving := filepath.Join(testmail.Dir(t, b, "S1"), "tmp", "1795891007.M668369P2685.vm")
	if err := os.WriteFile(saving, []byte("From: a@example.org\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := testmail.Sync(t, a, b, session.Options{})
	if !s.Changed {
		t.Fatal("the sync did not report the rename it put off")
	}
	if _, err := os.Stat(saving); err != nil {
		t.Fatalf("the file being saved into B's S1 moved away: %v", err)
	}
	if err := os.Remove(saving); err != nil { // the save is done
		t.Fatal(err)
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
	testmail.WantMailboxes(t, []string{"INBOX", "S3"}, a, b)
}

// TestRenameWaitsForDovecotsLock: as TestRenameWaitsForASave, with a
// Dovecot process holding dovecot.index.log.newlock in B's S1 (it creates
// the folder's index log). Moving the folder under it made Dovecot log
// "Our dotlock file ... was deleted", and that process kept the mailbox
// list's lock for three minutes, blocking every other client (seen in the
// IMAP stress).
func TestRenameWaitsForDovecotsLock(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "S1", "in S1")
	settle(t, a, b)
	testmail.Rename(t, a, "S1", "S3")
	lock := filepath.Join(testmail.Dir(t, b, "S1"), "dovecot.index.log.newlock")
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := testmail.Sync(t, a, b, session.Options{})
	if !s.Changed {
		t.Fatal("the sync did not report the rename it put off")
	}
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("Dovecot's lock in B's S1 moved away: %v", err)
	}
	if err := os.Remove(lock); err != nil {
		t.Fatal(err)
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
	testmail.WantMailboxes(t, []string{"INBOX", "S3"}, a, b)
}

// TestFolderDeletedRightAfterTheRename: a client of B deletes S3 right
// after the sync moved B's S1 there (its lock went with the folder). The
// move is done: the sync must not fail (it exited 1 on "dotlock was taken
// over by someone else" in the IMAP stress), and the next syncs converge.
func TestFolderDeletedRightAfterTheRename(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "S1", "in S1")
	settle(t, a, b)
	testmail.Rename(t, a, "S1", "S3")
	restore := index.SetTestHookAfterRename(func(dst string) {
		if strings.HasPrefix(dst, b) {
			testmail.DeleteWithIntent(t, b, "S3")
		}
	})
	_, err := testmail.TrySync(a, b, session.Options{})
	restore()
	if err != nil {
		t.Fatalf("sync with the folder deleted right after its move: %v", err)
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
}
