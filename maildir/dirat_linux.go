//go:build linux

package maildir

import (
	"os"

	"golang.org/x/sys/unix"
)

// isDirAt reports whether rel, relative to the open directory d, is a
// directory (following symbolic links, as os.Stat). done is false when d
// is nil: the caller then looks the path up itself.
func isDirAt(d *os.File, rel string) (ok, done bool) {
	if d == nil {
		return false, false
	}
	var s unix.Stat_t
	err := unix.Fstatat(int(d.Fd()), rel, &s, 0)
	return err == nil && s.Mode&unix.S_IFMT == unix.S_IFDIR, true
}
