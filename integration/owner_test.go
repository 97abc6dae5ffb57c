package integration

import (
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// TestRootRunKeepsMailOwner: twinbox run as root (from cron, for all users)
// must leave every file it writes into a user's Maildir owned by that user,
// or Dovecot, running as the user, cannot read or replace it (contract §7;
// maildir's chownLike says so for control files).
func TestRootRunKeepsMailOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u, err := user.Lookup(dovecot.TestUser)
	if err != nil {
		if u, err = user.Lookup("nobody"); err != nil {
			t.Skip("no unprivileged user to own the Maildirs")
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	chown := func(root string) {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, gid)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	a, b := pair(t)
	m := testmail.Deliver(t, a, "INBOX", "1")
	testmail.Deliver(t, a, "Work", "2")
	testmail.Deliver(t, b, "INBOX", "3")
	syncOK(t, a, b)
	chown(a)
	chown(b)
	// New mail, a new folder, flag changes, on both sides; then a root sync.
	testmail.Deliver(t, a, "INBOX", "4")
	testmail.Deliver(t, a, "New", "5")
	testmail.Deliver(t, b, "Work", "6")
	testmail.SetFlags(t, b, "INBOX", m, "S")
	chown(a)
	chown(b)
	syncOK(t, a, b)
	var wrong []string
	for _, root := range []string{a, b} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if notIndex(rel) {
				return nil // twinbox's own index
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != gid {
				wrong = append(wrong, p+" ("+strconv.Itoa(int(st.Uid))+":"+strconv.Itoa(int(st.Gid))+" "+fi.Mode().String()+")")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(wrong) > 0 {
		t.Errorf("BUG: a sync run as root left %d files and directories in Maildirs owned by %s (%d:%d) that belong to another user, so Dovecot running as %s cannot read them (\"Permission denied\"):\n  %s",
			len(wrong), u.Username, uid, gid, u.Username, strings.Join(wrong, "\n  "))
	}
}
