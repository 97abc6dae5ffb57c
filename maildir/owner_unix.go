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

// Owner is a user and group to give files.
type Owner struct{ UID, GID int }

// OwnerOf returns the owner and group of dir when running as root (new
// files in dir are to be given them, as chownLike does), else nil.
func OwnerOf(dir string) (*Owner, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, nil
	}
	return &Owner{UID: int(st.Uid), GID: int(st.Gid)}, nil
}

// inodeOf returns a file's inode number.
func inodeOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
