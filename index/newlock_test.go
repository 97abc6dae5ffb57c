package index_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestMoveHoldsDovecotsLogCreationLock: while a sync moves a mailbox
// directory (replicating a RENAME) or removes it (replicating a DELETE), it
// holds dovecot.index.log.newlock in it, the dotlock under which Dovecot
// makes a folder's first transaction log: a Dovecot process cannot be
// making it as the folder moves (it waits, then finds the folder gone).
// The hook stands for that process: right before the rename(2) it tries
// to take the lock as Dovecot does (O_EXCL). Without the lock the move went
// ahead under Dovecot's, which then logged "rename(.../dovecot.index.log.newlock,
// ...) failed: No such file or directory" and left its lock in the moved
// folder (TestDovecotAloneFolderMovedWhileLogCreated in integration/imap).
// No lock is left behind in either replica.
func TestMoveHoldsDovecotsLogCreationLock(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "S1", "in S1")
	testmail.Deliver(t, a, "S2", "in S2")
	settle(t, a, b)
	testmail.Rename(t, a, "S1", "S3")
	testmail.DeleteWithIntent(t, a, "S2")
	var tried []string
	refused := 0
	restore := index.SetTestHookBeforeDirMove(func(dir string) {
		if !strings.HasPrefix(dir, b) {
			return
		}
		tried = append(tried, filepath.Base(dir))
		lock := filepath.Join(dir, "dovecot.index.log.newlock")
		f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case errors.Is(err, fs.ErrExist):
			refused++
		case err == nil:
			// Taken: "Dovecot" is done at once (so the move can go on).
			f.Close()
			if err := os.Remove(lock); err != nil {
				t.Error(err)
			}
		default:
			t.Errorf("taking %s: %v", lock, err)
		}
	})
	for i := 0; ; i++ {
		if s := testmail.Sync(t, a, b, session.Options{}); !s.Changed {
			break
		}
		if i == 3 {
			restore()
			t.Fatal("no convergence")
		}
	}
	restore()
	if len(tried) != 2 {
		t.Fatalf("B's directories moved or removed: %v, want S1's move and S2's removal", tried)
	}
	if refused != len(tried) {
		t.Errorf("Dovecot could take dovecot.index.log.newlock in %d of the %d directories the sync moved or removed (%v)", len(tried)-refused, len(tried), tried)
	}
	testmail.Converged(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "S3"}, a, b)
	for _, root := range []string{a, b} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".newlock") {
				t.Errorf("a lock left behind: %s", p)
			}
			return nil
		})
	}
}

// TestDeleteMailboxHoldsDovecotsLogCreationLock: as
// TestMoveHoldsDovecotsLogCreationLock for "twinbox delete"
// (Replica.DeleteMailbox).
func TestDeleteMailboxHoldsDovecotsLogCreationLock(t *testing.T) {
	root := t.TempDir()
	testmail.Deliver(t, root, "S1", "in S1")
	r, err := index.Open(context.Background(), maildir.Location{Root: root}, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tried, refused := 0, 0
	restore := index.SetTestHookBeforeDirMove(func(dir string) {
		tried++
		f, err := os.OpenFile(filepath.Join(dir, "dovecot.index.log.newlock"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			refused++
		} else if err == nil {
			f.Close()
			_ = os.Remove(filepath.Join(dir, "dovecot.index.log.newlock"))
		}
	})
	_, err = r.DeleteMailbox(context.Background(), "S1")
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if tried != 1 || refused != 1 {
		t.Errorf("the delete's removal: hook called %d times, Dovecot refused the lock %d times; want 1 and 1", tried, refused)
	}
	if _, err := os.Stat(testmail.Dir(t, root, "S1")); !os.IsNotExist(err) {
		t.Errorf("S1 is still there: %v", err)
	}
}
