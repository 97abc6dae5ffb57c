package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestSubscriptionsOrphanLock: a subscriptions.lock in twinbox's format that
// this process does not hold (left by a killed twinbox) is removed at once
// by LockSubscriptionsOrphans and BreakOrphanSubscriptionsLock; Dovecot's
// lock is not, and LockSubscriptions leaves the orphan to turn stale.
func TestSubscriptionsOrphanLock(t *testing.T) {
	root := t.TempDir()
	lock := filepath.Join(root, SubscriptionsName+".lock")
	orphan := func() {
		t.Helper()
		if err := os.WriteFile(lock, []byte("twinbox 999999999 0123456789abcdef"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()

	orphan()
	if _, err := LockSubscriptions(ctx, root, 0); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("LockSubscriptions over an orphan: %v, want a timeout", err)
	}
	l, err := LockSubscriptionsOrphans(ctx, root, 0)
	if err != nil {
		t.Fatalf("LockSubscriptionsOrphans over an orphan: %v", err)
	}
	if BreakOrphanSubscriptionsLock(root) {
		t.Fatal("broke the lock this process holds")
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}

	orphan()
	if !BreakOrphanSubscriptionsLock(root) {
		t.Fatal("BreakOrphanSubscriptionsLock left the orphan")
	}
	if _, err := os.Lstat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock still there: %v", err)
	}

	// Dovecot's lock ("pid:host") is never taken for an orphan.
	if err := os.WriteFile(lock, []byte("12345:somehost"), 0o600); err != nil {
		t.Fatal(err)
	}
	if BreakOrphanSubscriptionsLock(root) {
		t.Fatal("broke Dovecot's lock")
	}
	if _, err := LockSubscriptionsOrphans(ctx, root, 0); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("LockSubscriptionsOrphans over Dovecot's lock: %v, want a timeout", err)
	}
}
