package maildir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestMoveChildrenInto(t *testing.T) {
	root := t.TempDir()
	l := Location{Root: root, Layout: LayoutFS}
	mk := func(p string) {
		t.Helper()
		if err := CreateMailboxDirs(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("P")
	mk("Q/C")
	mk("Q/D/E")
	if !l.IsBareParent(filepath.Join(root, "Q")) {
		t.Fatal("Q holds only folders: want a bare parent")
	}
	if l.IsBareParent(filepath.Join(root, "P")) {
		t.Fatal("P is a mailbox: not a bare parent")
	}
	if (Location{Root: root}).IsBareParent(filepath.Join(root, "Q")) {
		t.Fatal("Maildir++ has no bare parents")
	}
	if err := l.MoveChildrenInto(filepath.Join(root, "P"), filepath.Join(root, "Q")); err == nil {
		t.Fatal("emptying a mailbox: want an error")
	}
	if err := l.MoveChildrenInto(filepath.Join(root, "Q"), filepath.Join(root, "P")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"P/C/cur", "P/D/E/cur", "P/cur"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "Q")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Q not removed: %v", err)
	}

	// A child that would replace one of the mailbox's is never moved.
	mk("R/C")
	err := l.MoveChildrenInto(filepath.Join(root, "R"), filepath.Join(root, "P"))
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("clash: got %v, want fs.ErrExist", err)
	}
	if _, err := os.Stat(filepath.Join(root, "R", "C", "cur")); err != nil {
		t.Errorf("R/C moved or lost on a clash: %v", err)
	}
	// Outside the root: refused.
	if err := l.MoveChildrenInto(t.TempDir(), filepath.Join(root, "P")); err == nil {
		t.Error("a directory outside the root: want an error")
	}
}
