//go:build !linux

package maildir

import (
	"context"
	"time"
)

// LockIndexLog holds nothing here (no open file description locks): see
// the Linux version.
func LockIndexLog(ctx context.Context, dir string, timeout time.Duration) (*IndexLogLock, error) {
	return nil, nil
}
