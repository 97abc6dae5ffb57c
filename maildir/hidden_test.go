package maildir

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// setHook installs hiddenHook for one test.
func setHook(t *testing.T, f func(step, hidden, dir string)) {
	t.Helper()
	hiddenHook = f
	t.Cleanup(func() { hiddenHook = nil })
}

// giveAway makes dir owned by another user when the test runs as root (so
// that "owned like its parent" is checked against something other than
// the test's own uid); it returns the uid expected on new directories.
func giveAway(t *testing.T, dir string) int {
	t.Helper()
	if os.Geteuid() != 0 {
		return os.Geteuid()
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return 65534
}

func ownerOf(t *testing.T, p string) int {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// listed reports whether the mailbox listing (which follows Dovecot's
// rules) shows dir.
func listed(t *testing.T, l Location, dir string) bool {
	t.Helper()
	all, err := l.ListMailboxes()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Dir == dir {
			return true
		}
	}
	return false
}

// A new mailbox appears under its name only complete (cur/, new/, tmp/,
// maildirfolder, the uidlist) and owned like the root: until the rename it
// lives under a hidden name that the listing, like Dovecot's, does not
// show. (The stress test saw Dovecot fail with "stat(.S1.Kid/tmp) failed:
// Permission denied" in the moment between twinbox's mkdir and chown.)
func TestMakeMailboxAppearsComplete(t *testing.T) {
	for _, layout := range []Layout{LayoutMaildirPP, LayoutFS} {
		t.Run(layout.String(), func(t *testing.T) {
			root := t.TempDir()
			l := Location{Root: root, Layout: layout}
			if _, err := l.MakeMailbox(root, nil); err != nil {
				t.Fatal(err)
			}
			uid := giveAway(t, root)
			for _, sub := range []string{"cur", "new", "tmp"} {
				if err := os.Chown(filepath.Join(root, sub), uid, uid); err != nil && os.Geteuid() == 0 {
					t.Fatal(err)
				}
			}
			dir, err := l.MailboxDir("Sub/Kid")
			if err != nil {
				t.Fatal(err)
			}
			published := 0
			setHook(t, func(step, hidden, d string) {
				if step != "publish" || d != dir {
					return
				}
				published++
				if _, err := os.Lstat(dir); err == nil {
					t.Errorf("%s exists before its publishing rename", dir)
				}
				if !l.IsHidden(hidden) {
					t.Errorf("built at %s, not under a hidden name", hidden)
				}
				if layout == LayoutMaildirPP && strings.HasPrefix(filepath.Base(hidden), ".") {
					t.Errorf("hidden name %s starts with '.': Dovecot's Maildir++ listing shows it", hidden)
				}
				if listed(t, l, hidden) {
					t.Errorf("the listing shows the hidden %s", hidden)
				}
				for _, p := range []string{hidden, filepath.Join(hidden, "cur"), filepath.Join(hidden, "new"), filepath.Join(hidden, "tmp"), filepath.Join(hidden, UidlistName)} {
					if got := ownerOf(t, p); got != uid {
						t.Errorf("%s is owned by %d before it appears, want %d", p, got, uid)
					}
				}
				if layout == LayoutMaildirPP {
					if _, err := os.Stat(filepath.Join(hidden, "maildirfolder")); err != nil {
						t.Errorf("no maildirfolder before it appears: %v", err)
					}
				}
			})
			ul := &Uidlist{Version: 3, UIDValidity: 7, NextUID: 5, GUID: NewGUID()}
			made, err := l.MakeMailbox(dir, ul)
			if err != nil || !made {
				t.Fatalf("MakeMailbox: made %v, %v", made, err)
			}
			if published != 1 {
				t.Fatalf("published %d times, want 1", published)
			}
			got, _, err := ReadUidlist(dir)
			if err != nil || got.GUID != ul.GUID || got.NextUID != 5 {
				t.Fatalf("uidlist after MakeMailbox: %+v, %v", got, err)
			}
			if !listed(t, l, dir) {
				t.Errorf("%s is not listed after MakeMailbox", dir)
			}
			if layout == LayoutFS {
				if got := ownerOf(t, filepath.Join(root, "Sub")); got != uid {
					t.Errorf("LAYOUT=fs parent owned by %d, want %d", got, uid)
				}
			}
			// Nothing hidden is left behind.
			leftovers(t, l, 0)

			// Again on the complete mailbox: nothing happens, the
			// uidlist stays.
			made, err = l.MakeMailbox(dir, &Uidlist{Version: 3, UIDValidity: 9, NextUID: 1, GUID: NewGUID()})
			if err != nil || made {
				t.Fatalf("MakeMailbox of an existing mailbox: made %v, %v", made, err)
			}
			if got, _, _ := ReadUidlist(dir); got.GUID != ul.GUID {
				t.Fatalf("MakeMailbox replaced an existing uidlist")
			}
			// A missing tmp/ is added, owned right when it appears.
			if err := os.Remove(filepath.Join(dir, "tmp")); err != nil {
				t.Fatal(err)
			}
			if _, err := l.MakeMailbox(dir, nil); err != nil {
				t.Fatal(err)
			}
			if got := ownerOf(t, filepath.Join(dir, "tmp")); got != uid {
				t.Errorf("re-made tmp/ owned by %d, want %d", got, uid)
			}
			leftovers(t, l, 0)
		})
	}
}

// leftovers checks how many hidden entries are in the hidden directory.
func leftovers(t *testing.T, l Location, want int) {
	t.Helper()
	ents, err := os.ReadDir(l.HiddenDir())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), HiddenPrefix) {
			got = append(got, e.Name())
		}
	}
	if len(got) != want {
		t.Errorf("hidden entries %v, want %d", got, want)
	}
}

// A folder a client makes while twinbox builds one of the same name wins:
// the publishing rename never replaces it (rename(2) would replace an
// empty directory), and the built one is thrown away.
func TestMakeMailboxNeverReplaces(t *testing.T) {
	root := t.TempDir()
	l := Location{Root: root}
	if _, err := l.MakeMailbox(root, nil); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".Box")
	setHook(t, func(step, hidden, d string) {
		if step == "publish" && d == dir {
			if err := os.Mkdir(dir, 0o700); err != nil { // Dovecot's CREATE, first step
				t.Fatal(err)
			}
		}
	})
	made, err := l.MakeMailbox(dir, &Uidlist{Version: 3, UIDValidity: 1, NextUID: 1, GUID: NewGUID()})
	if err != nil || made {
		t.Fatalf("MakeMailbox: made %v, %v; want not made", made, err)
	}
	if _, err := os.Stat(filepath.Join(dir, UidlistName)); err == nil {
		t.Errorf("the client's new folder was replaced by twinbox's")
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			t.Errorf("%s not completed: %v", sub, err)
		}
	}
	leftovers(t, l, 0)
}

// A folder removed is first renamed to a hidden name (as Dovecot's DELETE
// renames to "..DOVECOT-TRASHED"), so that no client lists it half
// removed, then removed. Under LAYOUT=fs its child folders stay.
func TestRemoveMailboxDirRenamesFirst(t *testing.T) {
	for _, layout := range []Layout{LayoutMaildirPP, LayoutFS} {
		t.Run(layout.String(), func(t *testing.T) {
			root := t.TempDir()
			l := Location{Root: root, Layout: layout}
			if _, err := l.MakeMailbox(root, nil); err != nil {
				t.Fatal(err)
			}
			dir, _ := l.MailboxDir("Box")
			kid, _ := l.MailboxDir("Box/Kid")
			for _, d := range []string{dir, kid} {
				if _, err := l.MakeMailbox(d, &Uidlist{Version: 3, UIDValidity: 1, NextUID: 1, GUID: NewGUID()}); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "cur", "1.M1P1.x:2,"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			lk, err := LockUidlist(context.Background(), dir, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			removing := 0
			setHook(t, func(step, hidden, d string) {
				if step != "remove" || d != dir {
					return
				}
				removing++
				if listed(t, l, dir) {
					t.Errorf("%s still listed when its removal starts", dir)
				}
				if _, err := os.Stat(filepath.Join(hidden, "cur", "1.M1P1.x:2,")); err != nil {
					t.Errorf("the mailbox's files are not in %s: %v", hidden, err)
				}
				if _, err := os.Stat(lk.Path()); err != nil {
					t.Errorf("the held lock did not follow the directory: %v", err)
				}
			})
			if err := l.RemoveMailboxDir(dir, lk.Moved); err != nil {
				t.Fatal(err)
			}
			_ = lk.Unlock()
			if removing != 1 {
				t.Fatalf("remove step ran %d times", removing)
			}
			if listed(t, l, dir) {
				t.Errorf("%s still listed", dir)
			}
			if !listed(t, l, kid) {
				t.Errorf("child folder %s went with its parent", kid)
			}
			leftovers(t, l, 0)
			if layout == LayoutFS {
				// The directory stays as the parent of Box/Kid, without
				// files of its own.
				if _, err := os.Stat(filepath.Join(dir, "cur")); err == nil {
					t.Errorf("%s/cur is still there", dir)
				}
				return
			}
			hiddenHook = nil
			if err := l.RemoveMailboxDir(dir, nil); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("removing it again: %v, want not exist", err)
			}
		})
	}
}

// What a crash leaves under hidden names: directories being built or
// removed are cleaned up; a mailbox renamed aside is listed (it holds
// mail) and kept.
func TestHiddenLeftovers(t *testing.T) {
	root := t.TempDir()
	l := Location{Root: root}
	if _, err := l.MakeMailbox(root, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{hiddenNew + "1", hiddenDel + "2", HiddenPrefix + "0123abcd"} {
		if err := os.MkdirAll(filepath.Join(root, n, "cur"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	aside, err := l.HiddenMailboxes()
	if err != nil || len(aside) != 1 || aside[0].Name != HiddenPrefix+"0123abcd" {
		t.Fatalf("HiddenMailboxes = %v, %v; want the one renamed aside", aside, err)
	}
	if all, _ := l.ListMailboxes(); len(all) != 1 {
		t.Errorf("the listing shows hidden directories: %v", all)
	}
	if err := l.CleanHidden(); err != nil {
		t.Fatal(err)
	}
	leftovers(t, l, 1)
	if _, err := os.Stat(filepath.Join(root, HiddenPrefix+"0123abcd", "cur")); err != nil {
		t.Errorf("the mailbox renamed aside was removed: %v", err)
	}
}

// A held lock follows its directory through a rename (Moved): it is
// refreshed and removed at the new place.
func TestDotlockMoved(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	if err := os.Mkdir(a, 0o700); err != nil {
		t.Fatal(err)
	}
	lk, err := LockUidlist(context.Background(), a, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	lk.Moved(b)
	if err := lk.Check(); err != nil {
		t.Fatalf("Check after Moved: %v", err)
	}
	if err := lk.Unlock(); err != nil {
		t.Fatalf("Unlock after Moved: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(b, UidlistName+".lock")); err == nil {
		t.Errorf("lock file left in the moved directory")
	}
}

// TestRenameDirNoReplace: a mailbox directory never replaces another
// directory, not even an empty one (a client's CREATE that has made the
// folder's directory but not yet its cur/, new/ and tmp/).
func TestRenameDirNoReplace(t *testing.T) {
	root := t.TempDir()
	src, dst := filepath.Join(root, ".S1"), filepath.Join(root, ".S3")
	if err := CreateMailboxDirs(src); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := RenameDirNoReplace(src, dst); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("rename onto an empty directory: %v, want an error wrapping fs.ErrExist", err)
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 0 {
		t.Fatalf("the empty target was replaced: it holds %d entries", len(ents))
	}
	if _, err := os.Stat(filepath.Join(src, "cur")); err != nil {
		t.Fatalf("the source moved: %v", err)
	}
	if err := os.Remove(dst); err != nil {
		t.Fatal(err)
	}
	if err := RenameDirNoReplace(src, dst); err != nil {
		t.Fatalf("rename to a free name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "cur")); err != nil {
		t.Fatalf("not moved: %v", err)
	}
}

// Under LAYOUT=fs a folder renamed aside carries its child folders into
// the hidden directory: HiddenMailboxes lists them too, so that the rest
// of a chain of renames finds the child by its uidlist (property seed
// 3638203411513440198: "rename of "Archive/2024/b": directory not found",
// which left the parent aside for want of the child's move). Maildir++
// folders are flat: nothing is carried.
func TestHiddenMailboxesListsCarriedChildren(t *testing.T) {
	root := t.TempDir()
	l := Location{Root: root, Layout: LayoutFS}
	if _, err := l.MakeMailbox(root, nil); err != nil {
		t.Fatal(err)
	}
	aside := filepath.Join(l.HiddenDir(), HiddenPrefix+"0123abcd")
	for _, d := range []string{aside, filepath.Join(aside, "b"), filepath.Join(aside, "b", "c"), filepath.Join(aside, "x", "y")} {
		if err := os.MkdirAll(filepath.Join(d, "cur"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.HiddenMailboxes()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range got {
		names = append(names, d.Name)
		if want := filepath.Join(l.HiddenDir(), filepath.FromSlash(d.Name)); d.Dir != want {
			t.Errorf("%s: dir %s, want %s", d.Name, d.Dir, want)
		}
	}
	want := []string{HiddenPrefix + "0123abcd", HiddenPrefix + "0123abcd/b", HiddenPrefix + "0123abcd/b/c", HiddenPrefix + "0123abcd/x/y"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("HiddenMailboxes = %v, want %v", names, want)
	}
	if all, _ := l.ListMailboxes(); len(all) != 1 {
		t.Errorf("the listing shows hidden directories: %v", all)
	}
}
