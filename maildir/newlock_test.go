package maildir

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIndexLogCreationLock: LockIndexLogCreation takes
// dovecot.index.log.newlock (O_EXCL: a second taker waits, then times
// out), Moved and Unlock remove it at the directory's new place, and
// BreakOrphanIndexLogCreationLock removes a twinbox one this process does
// not hold (a killed twinbox's), never a held one or Dovecot's.
func TestIndexLogCreationLock(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, ".S1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "dovecot.index.log.newlock")
	l, err := LockIndexLogCreation(context.Background(), dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("no lock file: %v", err)
	}
	if _, err := LockIndexLogCreation(context.Background(), dir, 50*time.Millisecond); err == nil {
		t.Fatal("a second LockIndexLogCreation took a held lock")
	}
	if BreakOrphanIndexLogCreationLock(dir) {
		t.Fatal("a held lock was broken as an orphan")
	}
	moved := filepath.Join(root, ".S3")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	l.Moved(moved)
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(moved, "dovecot.index.log.newlock")); !os.IsNotExist(err) {
		t.Fatalf("the lock is still at the new place: %v", err)
	}
	// A killed twinbox's lock, and Dovecot's (a log header, binary).
	orphan := filepath.Join(moved, "dovecot.index.log.newlock")
	if err := os.WriteFile(orphan, []byte("twinbox 12345 00aa11bb22cc33dd"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !BreakOrphanIndexLogCreationLock(moved) {
		t.Fatal("a killed twinbox's lock was not broken")
	}
	if err := os.WriteFile(orphan, []byte{1, 3, 40, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	if BreakOrphanIndexLogCreationLock(moved) {
		t.Fatal("Dovecot's lock was broken as twinbox's orphan")
	}
}
