package index

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/twinbox-mail/twinbox/maildir"
)

// stampAt relative to the open root gives what stampLock gives with the
// mailbox's directory opened: for INBOX, a folder, one with a uidlist,
// keywords and a lock, a directory with nothing in it, a file where the
// directory should be, a missing directory, and a path outside the root.
func TestStampAtMatchesStampLock(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "mail")
	for _, d := range []string{"", ".full", ".bare"} {
		if err := maildir.CreateMailboxDirs(filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{".full/" + maildir.UidlistName, ".full/dovecot-keywords", ".full/" + maildir.UidlistName + ".lock", ".afile"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("3 V1 N1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, ".empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := maildir.CreateMailboxDirs(filepath.Join(base, "outside")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, rel := range []string{"", ".full", ".bare", ".empty", ".afile", ".gone", "../outside"} {
		dir := filepath.Join(root, rel)
		for _, lock := range []bool{false, true} {
			want, wantLocked := stampLock(dir, lock)
			got, gotLocked := stampAt(fd, rel, dir, lock)
			if got != want || gotLocked != wantLocked {
				t.Errorf("%q lock=%v: stampAt %+v %v, stampLock %+v %v", rel, lock, got, gotLocked, want, wantLocked)
			}
		}
	}
	if st, locked := stampAt(fd, ".full", filepath.Join(root, ".full"), true); st.Uidlist == -1 || st.Keywords == -1 || st.Cur == -1 || !locked {
		t.Errorf(".full: %+v locked=%v, want every file found and the lock", st, locked)
	}
}
