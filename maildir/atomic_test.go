package maildir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "file")
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	tempName := regexp.MustCompile(`^\.file\.tmp[0-9a-f]{16}$`)
	err := WriteFileAtomic(path, 0o640, mtime, func(w io.Writer) error {
		// While writing, the data goes to a temporary file next to path.
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(entries) != 1 || !tempName.MatchString(entries[0].Name()) {
			t.Errorf("during the write the directory holds %v", entries)
		}
		_, err = io.WriteString(w, "hello\n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "hello\n" {
		t.Fatalf("content %q, %v", data, err)
	}
	fi, _ := os.Stat(path)
	if !fi.ModTime().Equal(mtime) {
		t.Errorf("mtime %v, want %v", fi.ModTime(), mtime)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}

	// Replacing: a zero mtime leaves the current time.
	before := time.Now().Add(-time.Second)
	if err := WriteFileAtomic(path, 0o600, time.Time{}, func(w io.Writer) error {
		_, err := io.WriteString(w, "second")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	fi, _ = os.Stat(path)
	if string(data) != "second" || fi.ModTime().Before(before) {
		t.Errorf("after replace: %q, mtime %v", data, fi.ModTime())
	}
	assertOnlyFiles(t, dir, "file")
}

func TestWriteFileAtomicError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "file")
	writeFile(t, path, "old")
	boom := errors.New("boom")
	err := WriteFileAtomic(path, 0o600, time.Time{}, func(w io.Writer) error {
		_, _ = io.WriteString(w, "partial")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	data, _ := os.ReadFile(path)
	if string(data) != "old" {
		t.Errorf("original changed to %q", data)
	}
	assertOnlyFiles(t, dir, "file")

	// A directory in the way of the rename: the temp file goes away too.
	blocker := filepath.Join(dir, "blocker")
	mkdirs(t, dir, "blocker/sub")
	err = WriteFileAtomic(blocker, 0o600, time.Time{}, func(w io.Writer) error { return nil })
	if err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	assertOnlyFiles(t, dir, "blocker", "file")

	// A missing directory.
	err = WriteFileAtomic(filepath.Join(dir, "nope", "file"), 0o600, time.Time{}, func(w io.Writer) error { return nil })
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if len(got) != len(names) {
		t.Fatalf("directory holds %v, want %v", got, names)
	}
	for i := range got {
		if got[i] != names[i] {
			t.Fatalf("directory holds %v, want %v", got, names)
		}
	}
}

func TestCreateMailboxDirs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b", ".c")
	if err := CreateMailboxDirs(dir); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v", sub, fi, err)
		}
	}
	if err := CreateMailboxDirs(dir); err != nil {
		t.Errorf("second call: %v", err)
	}
	writeFile(t, filepath.Join(root, "file"), "")
	if err := CreateMailboxDirs(filepath.Join(root, "file", "x")); err == nil {
		t.Error("CreateMailboxDirs under a file succeeded")
	}
	if err := CreateMailboxDirs(filepath.Join(root, "file")); err == nil {
		t.Error("CreateMailboxDirs on a file succeeded")
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Error(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestNextMtime(t *testing.T) {
	now := time.Unix(1000, 500)
	tests := []struct {
		old, want time.Time
	}{
		{time.Time{}, now},
		{time.Unix(999, 999999999), now},
		{time.Unix(1000, 0), time.Unix(1001, 0)},   // same second: bump
		{time.Unix(1000, 900), time.Unix(1001, 0)}, // same second, later ns
		{time.Unix(5000, 0), time.Unix(5001, 0)},   // old file in the future
	}
	for _, tt := range tests {
		if got := nextMtime(tt.old, now); !got.Equal(tt.want) {
			t.Errorf("nextMtime(%v) = %v, want %v", tt.old, got, tt.want)
		}
	}
}

func TestNextUidlistMtime(t *testing.T) {
	now := time.Unix(1000, 500)
	tests := []struct {
		old, want time.Time
	}{
		{time.Time{}, now},
		{time.Unix(999, 999999999), now},
		{time.Unix(1000, 400), now},                  // same second, earlier: the clock, not the next second
		{time.Unix(1000, 500), time.Unix(1000, 501)}, // the clock did not move
		{time.Unix(5000, 0), time.Unix(5000, 1)},     // old file in the future
	}
	for _, tt := range tests {
		if got := nextUidlistMtime(tt.old, now); !got.Equal(tt.want) {
			t.Errorf("nextUidlistMtime(%v) = %v, want %v", tt.old, got, tt.want)
		}
	}
}

// TestUidlistMtimeNeverRepeats: rewrites of a dovecot-uidlist with Dovecot
// appending records in between (which sets the mtime to the real time) never
// give the file an mtime it had before. Dovecot trusts its index over a
// uidlist whose mtime and size it recorded (maildir_uidlist_refresh_fast_init):
// a repeated mtime with the same size made it append a UID the file already
// held ("Broken file dovecot-uidlist: UIDs not ordered", issue 3's stress).
func TestUidlistMtimeNeverRepeats(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, UidlistName)
	seen := map[time.Time]int{}
	u := &Uidlist{Version: 3, UIDValidity: 1, NextUID: 1, GUID: [16]byte{1}}
	for i := 0; i < 20; i++ {
		u.NextUID++
		if err := WriteUidlist(dir, u); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if j, ok := seen[fi.ModTime()]; ok {
			t.Fatalf("rewrite %d has the mtime %v of rewrite %d", i, fi.ModTime(), j)
		}
		seen[fi.ModTime()] = i
		// Dovecot appends a record in place (under its lock): the mtime is
		// the real time again.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(f, "%d :x%d\n", u.NextUID, i); err != nil {
			t.Fatal(err)
		}
		f.Close()
		u.NextUID++
	}
}
