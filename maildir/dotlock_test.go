package maildir

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLockUidlistExclusion(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d1, err := LockUidlist(ctx, dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "dovecot-uidlist.lock")
	if d1.Path() != lock {
		t.Errorf("Path = %s", d1.Path())
	}
	// Our token, and no "pid:host" that Dovecot would check.
	if data, err := os.ReadFile(lock); err != nil || !strings.HasPrefix(string(data), "twinbox ") || strings.Contains(string(data), ":") {
		t.Fatalf("lock file: %q, %v", data, err)
	}

	start := time.Now()
	_, err = LockUidlist(ctx, dir, 300*time.Millisecond)
	if !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second locker: %v", err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("gave up after %v", waited)
	}
	if !strings.Contains(err.Error(), lock) {
		t.Errorf("error %q does not name the lock", err)
	}
	if _, err := LockUidlist(ctx, dir, 0); !errors.Is(err, ErrLockTimeout) {
		t.Errorf("single attempt: %v", err)
	}

	// The waiter gets the lock once it is released.
	got := make(chan error, 1)
	go func() {
		d2, err := LockUidlist(ctx, dir, 5*time.Second)
		if err == nil {
			err = d2.Unlock()
		}
		got <- err
	}()
	time.Sleep(150 * time.Millisecond)
	if err := d1.Check(); err != nil {
		t.Errorf("Check while held: %v", err)
	}
	if err := d1.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if _, err := os.Stat(lock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lock file left behind: %v", err)
	}
	if err := d1.Unlock(); err != nil {
		t.Errorf("second Unlock: %v", err)
	}
	if err := d1.Check(); !errors.Is(err, ErrLockLost) {
		t.Errorf("Check after Unlock: %v", err)
	}
}

func TestLockUidlistMutualExclusion(t *testing.T) {
	dir := t.TempDir()
	var inside, overlaps, done atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				d, err := LockUidlist(context.Background(), dir, 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				if err := d.Unlock(); err != nil {
					t.Error(err)
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if overlaps.Load() != 0 || done.Load() != 40 {
		t.Errorf("%d overlaps, %d critical sections", overlaps.Load(), done.Load())
	}
}

func TestLockUidlistStale(t *testing.T) {
	ctx := context.Background()
	t.Run("taken over after 120 s", func(t *testing.T) {
		dir := t.TempDir()
		lock := filepath.Join(dir, "dovecot-uidlist.lock")
		writeFile(t, lock, "12345:otherhost")
		old := time.Now().Add(-121 * time.Second)
		if err := os.Chtimes(lock, old, old); err != nil {
			t.Fatal(err)
		}
		d, err := LockUidlist(ctx, dir, 2*time.Second)
		if err != nil {
			t.Fatalf("stale lock not taken over: %v", err)
		}
		if data, err := os.ReadFile(lock); err != nil || !strings.HasPrefix(string(data), "twinbox ") {
			t.Errorf("lock is not ours: %q, %v", data, err)
		}
		if err := d.Unlock(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("not before", func(t *testing.T) {
		dir := t.TempDir()
		lock := filepath.Join(dir, "dovecot-uidlist.lock")
		writeFile(t, lock, "")
		old := time.Now().Add(-110 * time.Second)
		if err := os.Chtimes(lock, old, old); err != nil {
			t.Fatal(err)
		}
		if _, err := LockUidlist(ctx, dir, 200*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
			t.Fatalf("young lock: %v", err)
		}
		if _, err := os.Stat(lock); err != nil {
			t.Errorf("young lock removed: %v", err)
		}
	})
	t.Run("not while the uidlist changes", func(t *testing.T) {
		dir := t.TempDir()
		lock := filepath.Join(dir, "dovecot-uidlist.lock")
		writeFile(t, lock, "")
		writeFile(t, filepath.Join(dir, UidlistName), "3 V1 N1\n")
		old := time.Now().Add(-121 * time.Second)
		if err := os.Chtimes(lock, old, old); err != nil {
			t.Fatal(err)
		}
		if _, err := LockUidlist(ctx, dir, 200*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
			t.Fatalf("lock with a fresh uidlist: %v", err)
		}
	})
}

func TestLockUidlistCancel(t *testing.T) {
	dir := t.TempDir()
	d, err := LockUidlist(context.Background(), dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = LockUidlist(ctx, dir, time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("cancel took %v", time.Since(start))
	}
}

func TestLockUidlistMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	_, err := LockUidlist(context.Background(), dir, time.Second)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v", err)
	}
}

func TestLockRefresh(t *testing.T) {
	old := refreshInterval
	refreshInterval = 20 * time.Millisecond
	defer func() { refreshInterval = old }()

	dir := t.TempDir()
	d, err := LockUidlist(context.Background(), dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lock := d.Path()
	past := time.Now().Add(-100 * time.Second)
	if err := os.Chtimes(lock, past, past); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		fi, err := os.Stat(lock)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(fi.ModTime()) < 5*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock mtime still %v", fi.ModTime())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.Unlock(); err != nil {
		t.Fatal(err)
	}
}

func TestLockLost(t *testing.T) {
	old := refreshInterval
	refreshInterval = 20 * time.Millisecond
	defer func() { refreshInterval = old }()

	dir := t.TempDir()
	d, err := LockUidlist(context.Background(), dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Someone decides our lock is stale and takes it.
	if err := os.Remove(d.Path()); err != nil {
		t.Fatal(err)
	}
	writeFile(t, d.Path(), "theirs")
	if err := d.Check(); !errors.Is(err, ErrLockLost) {
		t.Errorf("Check: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // the refresher notices too
	if err := d.Unlock(); !errors.Is(err, ErrLockLost) {
		t.Errorf("Unlock: %v", err)
	}
	data, err := os.ReadFile(d.Path())
	if err != nil || string(data) != "theirs" {
		t.Errorf("their lock was touched: %q, %v", data, err)
	}
	// Their lock was not refreshed by our goroutine.
	fi, _ := os.Stat(d.Path())
	past := time.Now().Add(-time.Hour)
	_ = os.Chtimes(d.Path(), past, past)
	time.Sleep(60 * time.Millisecond)
	if fi2, _ := os.Stat(d.Path()); !fi2.ModTime().Equal(past) {
		t.Errorf("their lock's mtime changed: %v -> %v", fi.ModTime(), fi2.ModTime())
	}
}
