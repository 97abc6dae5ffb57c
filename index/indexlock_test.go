//go:build linux

package index_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// holdIndexLog takes, on dir's dovecot.index.log (made if missing), the
// lock a Dovecot process holds there while it changes the folder's index
// files (a classic fcntl write lock on the whole file: lock_method =
// fcntl, the default); it returns the function that releases it.
func holdIndexLog(t *testing.T, dir string) func() {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, maildir.IndexLogName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

// A sync does not move or remove a folder while a Dovecot process holds
// the lock of its transaction log: Dovecot's cache purge holds only that
// lock while it writes dovecot.index.cache.tmp and renames it into place
// by path, and a folder moved in between made it log "rename() failed with
// file .../.S2/dovecot.index.cache: No such file or directory" (stress,
// Dovecot 2.4, a sync's move). The rename and the delete wait for the next
// sync (exit 2); released, they replicate.
func TestFolderMovesWaitForDovecotIndexLock(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "S1", "renamed")
	testmail.Deliver(t, a, "S2", "deleted")
	settle(t, a, b)
	testmail.Rename(t, a, "S1", "S3")
	testmail.DeleteWithIntent(t, a, "S2")
	s1, s2 := testmail.Dir(t, b, "S1"), testmail.Dir(t, b, "S2")
	defer index.SetIndexLogWait(100 * time.Millisecond)()
	release1, release2 := holdIndexLog(t, s1), holdIndexLog(t, s2)
	s, err := testmail.TrySync(a, b, session.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Changed {
		t.Error("the sync did not report the folder changes it could not make")
	}
	for _, d := range []string{s1, s2} {
		if _, err := os.Stat(filepath.Join(d, "cur")); err != nil {
			t.Errorf("%s moved or removed under Dovecot's index lock: %v", d, err)
		}
	}
	release1()
	release2()
	untilQuiet(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "S3"}, a, b)
}
