package maildir

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// WriteFileAtomic replaces path with the bytes write produces, so that a
// reader (or a crash) sees either the old file or the complete new one:
//
//  1. create a temporary file ".<base>.tmp<random>" in the same directory
//     (O_EXCL, mode perm);
//  2. run write on it (buffered), then set its mode to perm and, unless
//     mtime is zero, its modification time to mtime;
//  3. fsync and close it;
//  4. rename it over path;
//  5. fsync the directory, so that the rename itself is durable.
//
// The temporary file is removed on any error before the rename. When the
// process runs as root, the new file takes the owner and group of the file it
// replaces (or, for a new file, of the directory), so that Dovecot, running as
// the mail owner, can still read and replace it.
//
// The mtime is set before the fsync (not after the close) so that it is
// covered by the fsync too.
func WriteFileAtomic(path string, perm os.FileMode, mtime time.Time, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return fmt.Errorf("writing %s: no file name", path)
	}
	f, tmp, err := createTemp(dir, base)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				_ = f.Close()
			}
			_ = os.Remove(tmp)
		}
	}()

	bw := bufio.NewWriter(f)
	if err = write(bw); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err = chownLike(tmp, path, dir); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if !mtime.IsZero() {
		if err = os.Chtimes(tmp, time.Time{}, mtime); err != nil {
			return fmt.Errorf("writing %s: %w", tmp, err)
		}
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: fsync: %w", tmp, err)
	}
	closed = true
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = SyncDir(dir); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// createTemp creates ".<base>.tmp<16 hex digits>" in dir with O_EXCL.
func createTemp(dir, base string) (*os.File, string, error) {
	for range 10 {
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		name := filepath.Join(dir, "."+base+".tmp"+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return f, name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, "", err
		}
	}
	return nil, "", fmt.Errorf("creating a temporary file for %s in %s: too many collisions", base, dir)
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable. File systems that cannot fsync a directory (EINVAL,
// ENOTSUP) are treated as success.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	err = d.Sync()
	closeErr := d.Close()
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	if closeErr != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, closeErr)
	}
	return nil
}

// CreateMailboxDirs creates dir (and any missing parents) and its cur/,
// new/ and tmp/ subdirectories, mode 0700. Every directory it created is made
// durable by fsyncing its parent. Existing directories are left alone, so it
// is safe to call on a complete mailbox.
func CreateMailboxDirs(dir string) error {
	var created []string
	if err := mkdirTracked(dir, &created); err != nil {
		return err
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := mkdirTracked(filepath.Join(dir, sub), &created); err != nil {
			return err
		}
	}
	for _, d := range created {
		// New directories belong to whoever owns their parent.
		if err := chownLike(d, "", filepath.Dir(d)); err != nil {
			return fmt.Errorf("creating mailbox %s: %w", dir, err)
		}
	}
	synced := make(map[string]bool)
	for i := len(created) - 1; i >= 0; i-- {
		parent := filepath.Dir(created[i])
		if synced[parent] {
			continue
		}
		synced[parent] = true
		if err := SyncDir(parent); err != nil {
			return fmt.Errorf("creating mailbox %s: %w", dir, err)
		}
	}
	return nil
}

// mkdirTracked is os.MkdirAll that records, top down, the directories it
// actually created.
func mkdirTracked(dir string, created *[]string) error {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("creating directory %s: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("creating directory %s: %w", dir, err)
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirTracked(parent, created); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
				return nil // created by someone else meanwhile
			}
		}
		return fmt.Errorf("creating directory %s: %w", dir, err)
	}
	*created = append(*created, dir)
	return chownLike(dir, "", parent)
}

// nextMtime returns the modification time to give a rewritten index file
// whose previous version had mtime old (zero: no previous file). Dovecot
// notices changes to dovecot-keywords and subscriptions by comparing mtimes in
// whole seconds, so the new mtime must be in a later second than the old one:
// the current time if the clock has moved on, or else one second past the old
// mtime.
func nextMtime(old, now time.Time) time.Time {
	if old.IsZero() || now.Unix() > old.Unix() {
		return now
	}
	return time.Unix(old.Unix()+1, 0)
}

// nextUidlistMtime returns the modification time to give a rewritten
// dovecot-uidlist whose previous version had mtime old: the current time
// when it is later than old (to the nanosecond), else 1 ns past old.
//
// Not nextMtime's "a later second": Dovecot compares the uidlist's mtime to
// the nanosecond, and it appends records to the file in place, which sets
// the mtime back to the real time. A rewrite dated into the next second
// (S+1.0) when the clock had not left second S, an append by Dovecot (mtime
// back in S), then another such rewrite gave S+1.0 again: a Dovecot whose
// index had recorded the first rewrite's mtime and size (same size, by
// chance) trusted its index over the new file (maildir_uidlist_refresh_fast_init),
// appended a record with a UID the file already held, and logged "Broken
// file dovecot-uidlist: UIDs not ordered". Real times never repeat.
func nextUidlistMtime(old, now time.Time) time.Time {
	if old.IsZero() || now.After(old) {
		return now
	}
	return old.Add(time.Nanosecond)
}

// writeIndexFile writes an index file (dovecot-keywords, subscriptions)
// atomically, keeping the old file's mode (0600 for a new file) and giving
// it an mtime in a later second than the old one (nextMtime).
func writeIndexFile(path string, data []byte) error {
	return writeIndexFileMtime(path, data, nextMtime)
}

// writeIndexFileMtime writes an index file atomically, keeping the old
// file's mode (0600 for a new file), with the mtime next(old, now).
func writeIndexFileMtime(path string, data []byte, next func(old, now time.Time) time.Time) error {
	perm := os.FileMode(0o600)
	var old time.Time
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
		old = fi.ModTime()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return WriteFileAtomic(path, perm, next(old, time.Now()), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// readFileInfo reads a whole file and returns the FileInfo of the very file
// it read (not of whatever is at path a moment later).
func readFileInfo(path string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	// Sized by the stat: one read for a large uidlist, not a dozen
	// reallocations (the file can still grow meanwhile).
	buf := bytes.NewBuffer(make([]byte, 0, max(fi.Size(), 0)+bytes.MinRead))
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return buf.Bytes(), fi, nil
}

// OwnLike gives path the owner and group of dir when running as root (a
// root-run twinbox must leave files that Dovecot, running as the mail
// owner, can read and replace); otherwise it does nothing.
func OwnLike(path, dir string) error { return chownLike(path, "", dir) }

// MoveFileNoReplace gives the file old the name new and removes the name
// old, failing with an error that wraps fs.ErrExist if new exists: an
// existing name is never replaced. It is one renameat2(RENAME_NOREPLACE)
// where the system and file system have it (a first sync moves thousands
// of bodies from tmp/ into cur/), and link(2) then unlink(2) elsewhere
// (a crash between the two leaves both names, as a link always did).
func MoveFileNoReplace(old, new string) error {
	err := renameat2NoReplace(old, new)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
	}
	if err := os.Link(old, new); err != nil {
		return err
	}
	if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
