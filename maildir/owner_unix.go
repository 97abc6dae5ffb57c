//go:build unix

package maildir

import (
	"os"
	"syscall"
)

// chownLike gives path the owner and group of like (or, when like is empty
// or missing, of dir), but only when running as root: a root-run twinbox must
// not leave files behind that Dovecot, running as the mail owner, cannot
// read or replace. Other users cannot give files away, so nothing is done.
func chownLike(path, like, dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	var st *syscall.Stat_t
	if like != "" {
		if fi, err := os.Stat(like); err == nil {
			st, _ = fi.Sys().(*syscall.Stat_t)
		}
	}
	if st == nil {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		st, _ = fi.Sys().(*syscall.Stat_t)
	}
	if st == nil {
		return nil
	}
	return os.Lchown(path, int(st.Uid), int(st.Gid))
}
