package maildir

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Dovecot's stale timeouts: a dotlock that has not changed for this long,
// while the file it protects has not changed either, may be taken over.
const (
	UidlistLockStale       = 120 * time.Second // MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT
	SubscriptionsLockStale = 30 * time.Second  // SUBSCRIPTION_FILE_CHANGE_TIMEOUT
)

var (
	// ErrLockTimeout: the dotlock stayed held by someone else until the
	// timeout.
	ErrLockTimeout = errors.New("timed out waiting for the dotlock")
	// ErrLockLost: our dotlock file was removed or replaced by someone
	// else (who decided it was stale).
	ErrLockLost = errors.New("dotlock was taken over by someone else")
)

// Tunables; tests shorten them.
var (
	refreshInterval = 10 * time.Second       // how often a held lock is touched
	retryMax        = 100 * time.Millisecond // longest sleep between attempts
)

// Dotlock is a held Dovecot dotlock: a file "<name>.lock" created with
// O_EXCL next to the file it protects. While it is held a goroutine touches
// it every 10 s, so that nobody (Dovecot included) takes it for stale.
//
// The lock file holds "twinbox <pid> <random token>". Dovecot writes
// "<pid>:<host>" and, finding that form in a lock older than 2 s with its own
// host name, takes the lock over at once if no such process runs; without the
// ":" it judges our lock by its age only, so a PID from another PID namespace
// (a container) can never make it steal a live lock. The token tells our lock
// from one that replaced it, even when the file system reuses the inode.
type Dotlock struct {
	path  string      // the lock file
	fi    os.FileInfo // identity (device, inode) of our lock file
	token string      // the lock file's content

	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	lost     error
	unlocked bool
}

// LockUidlist takes dir/dovecot-uidlist.lock, the lock Dovecot holds while
// it scans or changes a Maildir. It retries (sleeping at most 100 ms at a
// time) until timeout or ctx ends; timeout <= 0 means one attempt. A lock
// whose mtime is older than 120 s, while dovecot-uidlist has not changed for
// 120 s either, is stale: it is removed, if it is still the same file, and
// taking the lock is tried again. The error names the lock file and wraps
// ErrLockTimeout, ctx.Err() or the I/O error. ctx only bounds the wait; the
// lock is held until Unlock.
func LockUidlist(ctx context.Context, dir string, timeout time.Duration) (*Dotlock, error) {
	return lockFile(ctx, filepath.Join(dir, UidlistName), UidlistLockStale, timeout, false)
}

// LockUidlistOrphans is LockUidlist for a caller that holds its replica's
// own lock, so that no other twinbox process can be working in dir: a
// twinbox dotlock there that this process does not hold was left by a
// killed twinbox and is removed at once instead of after 120 s. Dovecot's
// locks are treated as LockUidlist does.
func LockUidlistOrphans(ctx context.Context, dir string, timeout time.Duration) (*Dotlock, error) {
	return lockFile(ctx, filepath.Join(dir, UidlistName), UidlistLockStale, timeout, true)
}

// BreakOrphanUidlistLock removes dir's dovecot-uidlist.lock if it is a
// twinbox lock this process does not hold (left by a killed twinbox); the
// caller holds its replica's own lock. It reports whether it did.
func BreakOrphanUidlistLock(dir string) bool {
	return breakOrphan(filepath.Join(dir, UidlistName) + ".lock")
}

// BreakOrphanIndexLogCreationLock is BreakOrphanUidlistLock for dir's
// dovecot.index.log.newlock (LockIndexLogCreation): a killed twinbox's
// would make Dovecot wait three minutes to index the folder.
func BreakOrphanIndexLogCreationLock(dir string) bool {
	return breakOrphan(filepath.Join(dir, IndexLogName) + ".newlock")
}

// liveTokens holds the tokens of the dotlocks this process holds.
var liveTokens sync.Map

// breakOrphan removes lockPath if it is a twinbox lock this process does
// not hold. It reports whether it did.
func breakOrphan(lockPath string) bool {
	fi, err := os.Lstat(lockPath)
	if err != nil {
		return false
	}
	data, err := os.ReadFile(lockPath)
	if err != nil || !strings.HasPrefix(string(data), "twinbox ") {
		return false
	}
	if _, mine := liveTokens.Load(string(data)); mine {
		return false
	}
	again, err := os.Lstat(lockPath)
	if err != nil || !os.SameFile(fi, again) {
		return false
	}
	return os.Remove(lockPath) == nil
}

// IndexLogNewLockStale is how long Dovecot waits for a mailbox's
// dovecot.index.log.newlock before it gives up
// (MAIL_TRANSACTION_LOG_LOCK_TIMEOUT, 3 minutes): one this old, while
// dovecot.index.log has not changed for as long, is stale.
const IndexLogNewLockStale = 180 * time.Second

// LockIndexLogCreation takes dir/dovecot.index.log.newlock, the dotlock
// under which Dovecot creates a mailbox's transaction log file
// (mail_transaction_log_file_create: it writes the new log as that file and
// renames it to dovecot.index.log; the folder's first log is made so, with
// no dovecot.index.log to hold a lock on). Dovecot waits while it exists.
// As LockUidlistOrphans, for a caller that holds its replica's own lock: a
// twinbox lock there that this process does not hold is removed at once.
// The lock file's content is twinbox's, not a log: hold it only while the
// mailbox directory moves or is removed, then Unlock (after Moved).
func LockIndexLogCreation(ctx context.Context, dir string, timeout time.Duration) (*Dotlock, error) {
	p := filepath.Join(dir, IndexLogName)
	return lockFileAt(ctx, p+".newlock", p, IndexLogNewLockStale, timeout, true)
}

// lockFile takes protected+".lock".
func lockFile(ctx context.Context, protected string, stale, timeout time.Duration, orphans bool) (*Dotlock, error) {
	return lockFileAt(ctx, protected+".lock", protected, stale, timeout, orphans)
}

// lockFileAt takes the dotlock lockPath that protects protected.
func lockFileAt(ctx context.Context, lockPath, protected string, stale, timeout time.Duration, orphans bool) (*Dotlock, error) {
	deadline := time.Now().Add(timeout)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("locking %s: %w", lockPath, err)
		}
		d, err := tryLock(lockPath)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("locking %s: %w", lockPath, err)
		}
		if orphans && breakOrphan(lockPath) {
			continue
		}
		broken, held, err := breakStale(lockPath, protected, stale)
		if err != nil {
			return nil, fmt.Errorf("locking %s: %w", lockPath, err)
		}
		if broken {
			// As Dovecot does: give another process that found the same
			// stale lock time to finish its unlink before we create ours,
			// or it could unlink our fresh lock.
			if err := sleepCtx(ctx, jitter()); err != nil {
				return nil, fmt.Errorf("locking %s: %w", lockPath, err)
			}
			continue
		}
		left := time.Until(deadline)
		if left <= 0 {
			if held.IsZero() {
				return nil, fmt.Errorf("locking %s: %w", lockPath, ErrLockTimeout)
			}
			return nil, fmt.Errorf("locking %s: %w (lock file last touched %s ago)",
				lockPath, ErrLockTimeout, time.Since(held).Round(time.Second))
		}
		if err := sleepCtx(ctx, min(jitter(), left)); err != nil {
			return nil, fmt.Errorf("locking %s: %w", lockPath, err)
		}
	}
}

// jitter is a random wait between retryMax/2 and retryMax.
func jitter() time.Duration {
	return retryMax/2 + time.Duration(rand.Int64N(int64(retryMax/2)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func tryLock(lockPath string) (*Dotlock, error) {
	// Like Dovecot: write the content to a temporary file, then link it to
	// the lock's name, so that the lock never exists without its content
	// (a kill between create and write would leave an anonymous lock).
	var rnd [8]byte
	_, _ = crand.Read(rnd[:])
	token := fmt.Sprintf("twinbox %d %x", os.Getpid(), rnd)
	tmp := fmt.Sprintf("%s.tmp%x", lockPath, rnd)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(token)
	if err == nil {
		// Run as root, give the lock to the mailbox's owner before it
		// exists under its name: a Dovecot waiting for it watches it with
		// inotify, which a root-owned 0600 file refuses ("Permission
		// denied" in Dovecot's log).
		err = chownLike(tmp, "", filepath.Dir(lockPath))
	}
	if err == nil {
		err = os.Link(tmp, lockPath)
	}
	os.Remove(tmp)
	if err != nil {
		f.Close()
		return nil, err
	}
	var fi os.FileInfo
	if err == nil {
		fi, err = f.Stat()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(lockPath)
		return nil, err
	}
	d := &Dotlock{
		path:  lockPath,
		fi:    fi,
		token: token,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	liveTokens.Store(token, true)
	go d.refresh()
	return d, nil
}

// breakStale removes lockPath if it is stale. It reports whether it did (or
// the lock vanished meanwhile: try again at once) and, if not, the lock's
// mtime.
func breakStale(lockPath, protected string, stale time.Duration) (broken bool, mtime time.Time, err error) {
	fi, err := os.Lstat(lockPath)
	if errors.Is(err, fs.ErrNotExist) {
		return true, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, err
	}
	if time.Since(fi.ModTime()) <= stale {
		return false, fi.ModTime(), nil
	}
	// Dovecot also looks at the protected file: if it changed recently,
	// its holder is alive.
	if pfi, err := os.Stat(protected); err == nil && time.Since(pfi.ModTime()) <= stale {
		return false, fi.ModTime(), nil
	}
	again, err := os.Lstat(lockPath)
	if errors.Is(err, fs.ErrNotExist) {
		return true, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, err
	}
	if !os.SameFile(fi, again) || !again.ModTime().Equal(fi.ModTime()) {
		return false, again.ModTime(), nil // replaced or touched meanwhile
	}
	if err := os.Remove(lockPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, time.Time{}, fmt.Errorf("removing stale lock: %w", err)
	}
	return true, time.Time{}, nil
}

func (d *Dotlock) refresh() {
	defer close(d.done)
	t := time.NewTicker(refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			if err := d.touch(); err != nil {
				d.mu.Lock()
				d.lost = err
				d.mu.Unlock()
				return
			}
		}
	}
}

// touch sets the lock file's times to now, if it is still ours.
func (d *Dotlock) touch() error {
	if err := d.verify(); err != nil {
		return err
	}
	now := time.Now()
	p := d.curPath()
	if err := os.Chtimes(p, now, now); err != nil {
		return fmt.Errorf("refreshing %s: %w", p, err)
	}
	return nil
}

// verify checks that the lock file is still the one we created: same
// device and inode, and our token inside.
func (d *Dotlock) verify() error {
	path := d.curPath()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w (removed)", path, ErrLockLost)
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if !os.SameFile(fi, d.fi) {
		return fmt.Errorf("%s: %w (replaced)", path, ErrLockLost)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w (removed)", path, ErrLockLost)
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if string(data) != d.token {
		return fmt.Errorf("%s: %w (replaced)", path, ErrLockLost)
	}
	return nil
}

// Path is the lock file's path.
func (d *Dotlock) Path() string { return d.curPath() }

func (d *Dotlock) curPath() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.path
}

// Check reports whether the lock is still ours: nil, or an error wrapping
// ErrLockLost. Call it right before a change that relies on the lock.
func (d *Dotlock) Check() error {
	d.mu.Lock()
	lost, unlocked := d.lost, d.unlocked
	d.mu.Unlock()
	if unlocked {
		return fmt.Errorf("%s: %w (unlocked)", d.curPath(), ErrLockLost)
	}
	if lost != nil {
		return lost
	}
	return d.verify()
}

// Unlock stops the refresher and removes the lock file if it is still ours.
// If someone else removed or replaced it, their file is left alone and the
// error wraps ErrLockLost: whatever was done under the lock may have raced
// with them. Calling Unlock again does nothing.
// Moved tells a held uidlist lock that its mailbox directory was renamed
// to dir while the lock was held (the lock file moved with it): refreshes
// and Unlock then use the lock file's new path.
func (d *Dotlock) Moved(dir string) {
	d.mu.Lock()
	d.path = filepath.Join(dir, filepath.Base(d.path))
	d.mu.Unlock()
}

func (d *Dotlock) Unlock() error {
	d.mu.Lock()
	if d.unlocked {
		d.mu.Unlock()
		return nil
	}
	d.unlocked = true
	d.mu.Unlock()
	defer liveTokens.Delete(d.token)

	close(d.stop)
	<-d.done
	if err := d.verify(); err != nil {
		return fmt.Errorf("unlocking: %w", err)
	}
	p := d.curPath()
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("unlocking %s: %w", p, err)
	}
	return nil
}
