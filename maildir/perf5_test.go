package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// ListMailboxesAndHidden reads the root once under Maildir++ and must give
// exactly what ListMailboxes and HiddenMailboxes give, in both layouts.
func TestListMailboxesAndHiddenMatches(t *testing.T) {
	for _, layout := range []Layout{LayoutMaildirPP, LayoutFS} {
		t.Run(fmt.Sprint(layout), func(t *testing.T) {
			root := t.TempDir()
			l := Location{Root: root, Layout: layout}
			for _, name := range []string{"INBOX", "a", "a/b", "Entwürfe", "z"} {
				dir, err := l.MailboxDir(name)
				if err != nil {
					t.Fatal(err)
				}
				if err := CreateMailboxDirs(dir); err != nil {
					t.Fatal(err)
				}
			}
			// Renamed aside (listed as hidden), and leftovers that are not.
			for _, tag := range []string{"00048bc8eef7bb834d3890620ad222e0", "new-x", "del-y"} {
				if err := CreateMailboxDirs(l.HiddenPath(tag)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(filepath.Join(root, ".nocur", "new"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, ".file"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			wantDirs, err := l.ListMailboxes()
			if err != nil {
				t.Fatal(err)
			}
			wantHidden, err := l.HiddenMailboxes()
			if err != nil {
				t.Fatal(err)
			}
			dirs, hidden, err := l.ListMailboxesAndHidden()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dirs, wantDirs) || !reflect.DeepEqual(hidden, wantHidden) {
				t.Fatalf("ListMailboxesAndHidden = %v, %v; want %v, %v", dirs, hidden, wantDirs, wantHidden)
			}
			if len(wantDirs) != 5 || len(wantHidden) != 1 {
				t.Fatalf("the layout was not built as meant: %v %v", wantDirs, wantHidden)
			}
		})
	}
	_, _, err := Location{Root: filepath.Join(t.TempDir(), "gone"), Layout: LayoutMaildirPP}.ListMailboxesAndHidden()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing root: %v", err)
	}
}

// MoveFileNoReplace moves a file under a free name, and leaves both files
// alone when the name is taken.
func TestMoveFileNoReplace(t *testing.T) {
	d := t.TempDir()
	a, b, c := filepath.Join(d, "a"), filepath.Join(d, "b"), filepath.Join(d, "c")
	for p, s := range map[string]string{a: "A", c: "C"} {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := MoveFileNoReplace(a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(a); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old name still there: %v", err)
	}
	if got, _ := os.ReadFile(b); string(got) != "A" {
		t.Fatalf("new name holds %q", got)
	}
	err := MoveFileNoReplace(b, c)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("move onto a taken name: %v, want an error wrapping fs.ErrExist", err)
	}
	for p, s := range map[string]string{b: "A", c: "C"} {
		if got, _ := os.ReadFile(p); string(got) != s {
			t.Fatalf("%s holds %q after a refused move, want %q", p, got, s)
		}
	}
	if err := MoveFileNoReplace(a, filepath.Join(d, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("move of a missing file: %v", err)
	}
}
