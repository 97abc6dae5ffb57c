//go:build !linux

package maildir

import "os"

// isDirAt is not available here: the caller looks the path up itself.
func isDirAt(d *os.File, rel string) (ok, done bool) { return false, false }
