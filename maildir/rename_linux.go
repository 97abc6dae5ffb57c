//go:build linux

package maildir

import "golang.org/x/sys/unix"

// renameat2NoReplace is renameat2(RENAME_NOREPLACE): fails with EEXIST
// instead of replacing new.
func renameat2NoReplace(old, new string) error {
	return unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
}
