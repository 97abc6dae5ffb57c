//go:build linux

package maildir

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dovecotLock takes the lock Dovecot takes on a transaction log: a
// classic fcntl write lock on the whole file (file_wait_lock with
// lock_method = fcntl). It returns the function that releases it.
func dovecotLock(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

func TestLockIndexLog(t *testing.T) {
	dir := t.TempDir()
	// No index: nothing to lock.
	if l, err := LockIndexLog(context.Background(), dir, 0); err != nil || l != nil {
		t.Fatalf("without %s: %v, %v; want nil, nil", IndexLogName, l, err)
	}
	l := (*IndexLogLock)(nil)
	l.Unlock() // nil-safe
	path := filepath.Join(dir, IndexLogName)
	if err := os.WriteFile(path, []byte("log"), 0o600); err != nil {
		t.Fatal(err)
	}
	release := dovecotLock(t, path)
	if _, err := LockIndexLog(context.Background(), dir, 50*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("with Dovecot's lock held: %v; want ErrLockTimeout", err)
	}
	release()
	l, err := LockIndexLog(context.Background(), dir, time.Second)
	if err != nil || l == nil {
		t.Fatalf("after Dovecot released it: %v, %v", l, err)
	}
	// Held: Dovecot's attempt fails until we unlock.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err == nil {
		t.Fatal("Dovecot's lock was granted while ours was held")
	}
	l.Unlock()
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatalf("Dovecot's lock after our Unlock: %v", err)
	}
}
