package maildir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Directories twinbox makes or removes in a mail root must never be seen by
// Dovecot half made or with the wrong owner: Dovecot (running as the mail
// owner) lists the root while twinbox (often root) works in it, and a
// directory that appears before it is chowned makes Dovecot log
// "stat(.../tmp) failed: Permission denied". So every new directory is
// built under a hidden name, given its owner, filled (cur/, new/, tmp/,
// maildirfolder, dovecot-uidlist), and only then renamed to its final name
// (a rename that never replaces). A mailbox removed is first renamed to a
// hidden name, as Dovecot's own DELETE does (it renames a Maildir++ folder
// to "..DOVECOT-TRASHED" first), and only then deleted.
//
// The hidden names start with HiddenPrefix and live where Dovecot's mailbox
// listing never looks:
//
//   - Maildir++: directly in the root, without a leading "." (Dovecot's
//     Maildir++ listing only takes names that start with the "." separator;
//     INBOX's cur/, new/, tmp/ and the control files live there too).
//   - LAYOUT=fs: in the root's tmp/ (INBOX's tmp/: Dovecot's fs listing skips
//     a maildir's cur/, new/ and tmp/ and never looks inside them).
//
// Three kinds share the prefix: HiddenPrefix+"new-..." (a directory being
// built), HiddenPrefix+"del-..." (a mailbox being removed) and
// HiddenPrefix+<mailbox GUID> (a mailbox renamed aside while a chain of
// renames runs; it holds mail, see HiddenMailboxes). A crash can leave
// any of them; CleanHidden removes the first two kinds.
const HiddenPrefix = "twinbox-tmp-"

const (
	hiddenNew = HiddenPrefix + "new-"
	hiddenDel = HiddenPrefix + "del-"
)

// hiddenHook, when set (by tests), runs at the steps of MkdirOwned,
// MakeMailbox and RemoveMailboxDir: "publish" with the hidden directory
// just before it is renamed to its name, "remove" with the hidden
// directory just before it is removed.
var hiddenHook func(step, hidden, dir string)

func hook(step, hidden, dir string) {
	if hiddenHook != nil {
		hiddenHook(step, hidden, dir)
	}
}

// HiddenDir is the directory that holds twinbox's hidden names for this
// layout (the root for Maildir++, the root's tmp/ for LAYOUT=fs).
func (l Location) HiddenDir() string {
	root := filepath.Clean(l.Root)
	if l.Layout == LayoutFS {
		return filepath.Join(root, "tmp")
	}
	return root
}

// HiddenPath returns the hidden path HiddenPrefix+tag (tag: one path
// element, no "/").
func (l Location) HiddenPath(tag string) string {
	return filepath.Join(l.HiddenDir(), HiddenPrefix+tag)
}

// IsHidden reports whether dir is one of twinbox's hidden names.
func (l Location) IsHidden(dir string) bool {
	return filepath.Dir(filepath.Clean(dir)) == l.HiddenDir() && strings.HasPrefix(filepath.Base(dir), HiddenPrefix)
}

func (l Location) newHidden(kind string) string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return filepath.Join(l.HiddenDir(), kind+hex.EncodeToString(rnd[:]))
}

// HiddenMailboxes returns the mailbox directories renamed aside under a
// hidden name (HiddenPrefix+<GUID>, with a cur/): a crash in a chain of
// renames can leave one, and its mail must still be found. Name is the
// directory's base name. Under LAYOUT=fs a folder renamed aside carries its
// child folders along: they are listed too, named by their path below the
// hidden directory (HiddenPrefix+<GUID>+"/b"), so that an apply's chain of
// renames, or the next scan, finds them by their uidlist's GUID.
func (l Location) HiddenMailboxes() ([]MailboxDir, error) {
	ents, err := os.ReadDir(l.HiddenDir())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing %s: %w", l.HiddenDir(), err)
	}
	out := hiddenIn(dirIn{path: l.HiddenDir()}, ents)
	if l.Layout != LayoutFS {
		return out, nil
	}
	for _, h := range out[:len(out):len(out)] {
		kids, err := l.listFS(l.HiddenDir(), h.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, kids...)
	}
	return out, nil
}

// hiddenIn picks the renamed-aside mailboxes from the entries of hdir.
func hiddenIn(hdir dirIn, ents []os.DirEntry) []MailboxDir {
	var out []MailboxDir
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || !strings.HasPrefix(n, HiddenPrefix) || strings.HasPrefix(n, hiddenNew) || strings.HasPrefix(n, hiddenDel) {
			continue
		}
		if hdir.isDir(n + "/cur") {
			out = append(out, MailboxDir{Name: n, Dir: filepath.Join(hdir.path, n)})
		}
	}
	return out
}

// CleanHidden removes what an interrupted create or delete left under a
// hidden name. It must run only while no other twinbox works in this root
// (under the replica lock). Renamed-aside mailboxes stay.
func (l Location) CleanHidden() error {
	ents, err := os.ReadDir(l.HiddenDir())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("listing %s: %w", l.HiddenDir(), err)
	}
	var first error
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, hiddenNew) || strings.HasPrefix(n, hiddenDel) {
			if err := os.RemoveAll(filepath.Join(l.HiddenDir(), n)); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// RenameDirNoReplace renames the mailbox directory old to new unless new
// exists (then an error wrapping fs.ErrExist), with renameat2's
// RENAME_NOREPLACE where the system has it. os.Rename checks that new is no
// directory and then calls rename(2), which replaces an empty directory: a
// directory that a client's CREATE has just made (Dovecot makes the
// folder's directory, then cur/, new/ and tmp/ in it) would be replaced
// if it appeared between the check and the rename.
func RenameDirNoReplace(old, new string) error { return renameNoReplace(old, new) }

// renameNoReplace renames old to new unless new exists (then an error
// wrapping fs.ErrExist). rename(2) alone would replace an empty directory
// that a client made a moment before.
func renameNoReplace(old, new string) error {
	err := renameat2NoReplace(old, new)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EINVAL) {
		// No renameat2 here (or not on this file system): check, then
		// rename; a directory made in between can still be replaced, but
		// only if it is empty.
		if _, lerr := os.Lstat(new); lerr == nil {
			return &os.LinkError{Op: "rename", Old: old, New: new, Err: syscall.EEXIST}
		}
		return os.Rename(old, new)
	}
	return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
}

// existErr reports an error of a rename onto a name that exists.
func existErr(err error) bool {
	return errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY)
}

// MkdirOwned makes directory dir (its parent must exist) so that it appears
// under its name already owned like its parent: it is made under a hidden
// name, chowned, and renamed into place. An existing directory is success.
// The root itself (which has no hidden place above it) is made with mkdir.
func (l Location) MkdirOwned(dir string) (created bool, err error) {
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return false, fmt.Errorf("creating directory %s: %w", dir, syscall.ENOTDIR)
		}
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("creating directory %s: %w", dir, err)
	}
	parent := filepath.Dir(dir)
	root := filepath.Clean(l.Root)
	if dir == root || !within(root, dir) || (l.Layout == LayoutFS && dir == l.HiddenDir()) {
		// The root, or the root's tmp/ under LAYOUT=fs (where the hidden
		// names live): made in place.
		if err := os.Mkdir(dir, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) && isDir(dir) {
				return false, nil
			}
			return false, fmt.Errorf("creating directory %s: %w", dir, err)
		}
		if err := chownLike(dir, "", parent); err != nil {
			return true, fmt.Errorf("creating directory %s: %w", dir, err)
		}
		return true, nil
	}
	if _, err := l.MkdirOwned(l.HiddenDir()); err != nil {
		return false, err
	}
	tmp := l.newHidden(hiddenNew)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return false, fmt.Errorf("creating directory %s: %w", dir, err)
	}
	if err := chownLike(tmp, "", parent); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("creating directory %s: %w", dir, err)
	}
	hook("publish", tmp, dir)
	if err := renameNoReplace(tmp, dir); err != nil {
		os.Remove(tmp)
		if existErr(err) && isDir(dir) {
			return false, nil // made by someone else meanwhile
		}
		return false, fmt.Errorf("creating directory %s: %w", dir, err)
	}
	return true, nil
}

// MakeMailbox makes sure dir is a complete mailbox directory. A directory
// that does not exist is built whole under a hidden name (cur/, new/, tmp/,
// for a Maildir++ folder the "maildirfolder" file, and ul as its
// dovecot-uidlist when ul is not nil), owned like its parent, made durable,
// then renamed into place, so that Dovecot sees it either not at all or
// complete and owned right. Missing parents (LAYOUT=fs) are made the same
// way, one level at a time. In a directory that exists only the missing
// cur/, new/ and tmp/ are added (each appearing owned right); its uidlist is
// left alone. made reports whether dir was built here (false: it existed,
// or someone made it meanwhile).
func (l Location) MakeMailbox(dir string, ul *Uidlist) (made bool, err error) {
	dir = filepath.Clean(dir)
	root := filepath.Clean(l.Root)
	if dir != root && !within(root, dir) {
		return false, fmt.Errorf("creating mailbox %s: outside the mail root %s", dir, root)
	}
	if dir != root {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			made, err := l.buildMailbox(dir, ul)
			if err != nil || made {
				return made, err
			}
		}
	}
	// It exists: add what is missing.
	if _, err := l.MkdirOwned(dir); err != nil {
		return false, fmt.Errorf("creating mailbox %s: %w", dir, err)
	}
	var added bool
	for _, sub := range []string{"cur", "new", "tmp"} {
		c, err := l.MkdirOwned(filepath.Join(dir, sub))
		if err != nil {
			return false, fmt.Errorf("creating mailbox %s: %w", dir, err)
		}
		added = added || c
	}
	if added {
		if err := SyncDir(dir); err != nil {
			return false, fmt.Errorf("creating mailbox %s: %w", dir, err)
		}
	}
	return false, nil
}

// buildMailbox builds a new mailbox directory under a hidden name and
// renames it to dir; made is false when dir appeared meanwhile.
func (l Location) buildMailbox(dir string, ul *Uidlist) (made bool, err error) {
	parent := filepath.Dir(dir)
	if err := l.MkdirParents(parent); err != nil {
		return false, fmt.Errorf("creating mailbox %s: %w", dir, err)
	}
	if _, err := l.MkdirOwned(l.HiddenDir()); err != nil {
		return false, err
	}
	tmp := l.newHidden(hiddenNew)
	defer func() {
		if !made {
			os.RemoveAll(tmp)
		}
	}()
	wrap := func(err error) error { return fmt.Errorf("creating mailbox %s: %w", dir, err) }
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return false, wrap(err)
	}
	if err := chownLike(tmp, "", parent); err != nil {
		return false, wrap(err)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		p := filepath.Join(tmp, sub)
		if err := os.Mkdir(p, 0o700); err != nil {
			return false, wrap(err)
		}
		if err := chownLike(p, "", tmp); err != nil {
			return false, wrap(err)
		}
	}
	if l.Layout == LayoutMaildirPP {
		p := filepath.Join(tmp, "maildirfolder")
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return false, wrap(err)
		}
		if err := f.Close(); err != nil {
			return false, wrap(err)
		}
		if err := chownLike(p, "", tmp); err != nil {
			return false, wrap(err)
		}
	}
	if ul != nil {
		if err := WriteUidlist(tmp, ul); err != nil {
			return false, wrap(err)
		}
	}
	if err := SyncDir(tmp); err != nil {
		return false, wrap(err)
	}
	hook("publish", tmp, dir)
	if err := renameNoReplace(tmp, dir); err != nil {
		if existErr(err) {
			return false, nil // someone made it meanwhile
		}
		return false, wrap(err)
	}
	made = true
	if err := SyncDir(parent); err != nil {
		return true, wrap(err)
	}
	return true, nil
}

// MkdirParents makes dir and its missing parents inside the root, each
// owned like its parent when it appears (LAYOUT=fs parents of a new
// folder).
func (l Location) MkdirParents(dir string) error {
	dir = filepath.Clean(dir)
	root := filepath.Clean(l.Root)
	if isDir(dir) {
		return nil
	}
	if dir != root && within(root, dir) {
		if err := l.MkdirParents(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	created, err := l.MkdirOwned(dir)
	if err != nil {
		return err
	}
	if created {
		return SyncDir(filepath.Dir(dir))
	}
	return nil
}

// RemoveMailboxDir removes a mailbox directory the way Dovecot's DELETE
// does: first renamed out of Dovecot's sight (to a hidden name), so that
// no client sees it half removed, then removed. Under LAYOUT=fs a directory
// that also holds child mailboxes keeps them: only its own files go (moved
// aside into a hidden directory first). A dir that does not exist is an
// error wrapping fs.ErrNotExist. moved reports the hidden directory the
// mailbox's own files went to (for a caller holding a lock in it).
func (l Location) RemoveMailboxDir(dir string, moved func(hidden string)) error {
	dir = filepath.Clean(dir)
	root := filepath.Clean(l.Root)
	if !within(root, dir) {
		return fmt.Errorf("removing mailbox %s: not a folder of %s", dir, root)
	}
	if _, err := l.MkdirOwned(l.HiddenDir()); err != nil {
		return err
	}
	trash := l.newHidden(hiddenDel)
	if l.Layout == LayoutFS && hasChildDirs(dir) {
		// Only the mailbox's own entries go; its child folders stay.
		if err := os.Mkdir(trash, 0o700); err != nil {
			return fmt.Errorf("removing mailbox %s: %w", dir, err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			os.Remove(trash)
			return fmt.Errorf("removing mailbox %s: %w", dir, err)
		}
		// The control files (the uidlist and its lock) first: without
		// them no one takes the folder for a mailbox in use.
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() && !reservedFS[n] {
				continue // a child folder
			}
			if err := os.Rename(filepath.Join(dir, n), filepath.Join(trash, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing mailbox %s: %w", dir, err)
			}
		}
		if moved != nil {
			moved(trash)
		}
		hook("remove", trash, dir)
		return os.RemoveAll(trash)
	}
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("removing mailbox %s: %w", dir, err)
	}
	if moved != nil {
		moved(trash)
	}
	if err := SyncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	hook("remove", trash, dir)
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("removing mailbox %s (renamed to %s): %w", dir, trash, err)
	}
	if l.Layout == LayoutFS {
		// Parents that held nothing but this mailbox go with it, as
		// Dovecot's delete does.
		l.RemoveEmptyParents(dir)
	}
	return nil
}

// RemoveEmptyParents removes the parents of dir that are empty, from the
// nearest up, below the mail root (LAYOUT=fs: a folder's parents that
// held nothing but it). It stops at the root and at the hidden directory,
// which for LAYOUT=fs is the root's tmp/, INBOX's tmp/: a mailbox moved
// through a hidden name leaves it empty, and INBOX must keep it.
func (l Location) RemoveEmptyParents(dir string) {
	root, hidden := filepath.Clean(l.Root), l.HiddenDir()
	for p := filepath.Dir(filepath.Clean(dir)); p != root && p != hidden && within(root, p); p = filepath.Dir(p) {
		if os.Remove(p) != nil {
			break
		}
	}
}

func hasChildDirs(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.IsDir() && !reservedFS[e.Name()] {
			return true
		}
	}
	return false
}

// IsBareParent reports whether dir, under LAYOUT=fs, is only a parent of
// other folders: a directory with no mailbox of its own (no uidlist, no
// cur/, new/ or tmp/, no files), holding only child directories.
func (l Location) IsBareParent(dir string) bool {
	if l.Layout != LayoutFS {
		return false
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !e.IsDir() || reservedFS[e.Name()] || strings.HasPrefix(e.Name(), HiddenPrefix) {
			return false
		}
	}
	return true
}

// MoveChildrenInto empties a bare parent (IsBareParent) so that a mailbox
// can be renamed to its place: each child folder moves into dir (never
// replacing one there), then the empty parent is removed. A child that
// would replace one of dir's is an error wrapping fs.ErrExist, and the
// children moved so far stay in dir (under the mailbox, whose rename to
// bare's place brings them back to their names).
func (l Location) MoveChildrenInto(bare, dir string) error {
	root := filepath.Clean(l.Root)
	if !within(root, filepath.Clean(bare)) || !within(root, filepath.Clean(dir)) {
		return fmt.Errorf("moving folders from %s to %s: not folders of %s", bare, dir, root)
	}
	if !l.IsBareParent(bare) {
		return fmt.Errorf("moving folders from %s: not a bare parent: %w", bare, fs.ErrExist)
	}
	ents, err := os.ReadDir(bare)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := renameNoReplace(filepath.Join(bare, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("moving folder %s into %s: %w", e.Name(), dir, err)
		}
	}
	if err := os.Remove(bare); err != nil {
		return fmt.Errorf("removing the emptied parent %s: %w", bare, err)
	}
	return SyncDir(dir)
}
