//go:build linux

package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockIndexLog takes the lock Dovecot takes on a mailbox's transaction log
// (a write lock on the whole of dir/dovecot.index.log with fcntl, Dovecot's
// default lock_method) while it changes the mailbox's index files. Some of
// those changes hold no other lock and name files by path: the cache purge
// writes dovecot.index.cache.tmp and renames it over dovecot.index.cache,
// so a folder moved in between makes Dovecot log "rename() failed ...
// dovecot.index.cache: No such file or directory". Hold it, after the
// uidlist lock (Dovecot's order), while moving or removing a mailbox
// directory.
//
// It retries until timeout or ctx ends (the error then wraps
// ErrLockTimeout or ctx.Err()). A mailbox without the file (no index yet,
// or indexes kept elsewhere) has nothing to lock: nil, nil. The lock is an
// open file description lock, which conflicts with Dovecot's fcntl locks
// and belongs to this lock alone (closing another descriptor of the file
// does not release it). Dovecot configured with lock_method = flock or
// dotlock is not held off by it.
func LockIndexLog(ctx context.Context, dir string, timeout time.Duration) (*IndexLogLock, error) {
	path := filepath.Join(dir, IndexLogName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return &IndexLogLock{unlock: func() { f.Close() }}, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, ErrLockTimeout)
		}
		if err := sleepCtx(ctx, min(jitter(), left)); err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
	}
}
