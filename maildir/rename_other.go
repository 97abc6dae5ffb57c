//go:build !linux

package maildir

import "syscall"

// renameat2NoReplace is not available here: the caller checks, then renames.
func renameat2NoReplace(old, new string) error { return syscall.ENOSYS }
