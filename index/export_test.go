package index

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
)

// SetTestHookBeforeUidlistWrite makes applyBox call f after its journaled
// renames and fresh-name links, before the uidlist names the new files (a
// panic there stands for a kill). It returns the function that removes it.
func SetTestHookBeforeUidlistWrite(f func()) func() {
	testHookBeforeUidlistWrite = f
	return func() { testHookBeforeUidlistWrite = nil }
}

// SetTestHookBeforeApplyBox makes applyBox call f with the replica's root
// before it locks a mailbox (a client acting between scan and apply).
func SetTestHookBeforeApplyBox(f func(root string)) func() {
	testHookBeforeApplyBox = f
	return func() { testHookBeforeApplyBox = nil }
}

// SetTestHookBeforeRename makes a mailbox rename call f with its target
// directory just before it renames (a client creating that folder then).
func SetTestHookBeforeRename(f func(dst string)) func() {
	testHookBeforeRename = f
	return func() { testHookBeforeRename = nil }
}

// SetTestHookBeforeAdopt makes a merge's move of this side's mailbox into
// the merged one call f with the merged mailbox's directory before it
// locates this side's (clients renaming and creating folders then).
func SetTestHookBeforeAdopt(f func(dst string)) func() {
	testHookBeforeAdopt = f
	return func() { testHookBeforeAdopt = nil }
}

// SetIndexLogWait sets how long a folder move waits for Dovecot's index
// log lock. It returns the function that restores the default.
func SetIndexLogWait(d time.Duration) func() {
	old := indexLogWait
	indexLogWait = d
	return func() { indexLogWait = old }
}

// SetTestHookBeforeDeleteLock makes a mailbox delete call f with the
// directory it found, just before it takes that directory's uidlist lock
// (clients deleting and renaming folders then).
func SetTestHookBeforeDeleteLock(f func(dir string)) func() {
	testHookBeforeDeleteLock = f
	return func() { testHookBeforeDeleteLock = nil }
}

// SetTestHookBetweenListings makes every listing of a mailbox's messages
// call f with the mailbox directory after it read cur/ and before it reads
// new/ (Dovecot moving a file from new/ to cur/ then).
func SetTestHookBetweenListings(f func(dir string)) func() {
	testHookBetweenListings = f
	return func() { testHookBetweenListings = nil }
}

// SetTestHookAfterRename makes a mailbox move call f with its new directory
// right after the move, before it releases the lock that moved with it (a
// client deleting the folder then).
func SetTestHookAfterRename(f func(dst string)) func() {
	testHookAfterRename = f
	return func() { testHookAfterRename = nil }
}

// SetTestHookBeforeBoxCommit makes applyBox call f with the mailbox's
// directory after its files and control files are written, before the
// index records them (a panic there stands for a kill).
func SetTestHookBeforeBoxCommit(f func(dir string)) func() {
	testHookBeforeBoxCommit = f
	return func() { testHookBeforeBoxCommit = nil }
}

// SetTestHookAfterListing makes a full scan of a mailbox call f with the
// mailbox directory after it listed the messages, before it reads each new
// file's size (Dovecot moving a file from new/ to cur/ then).
func SetTestHookAfterListing(f func(dir string)) func() {
	testHookAfterListing = f
	return func() { testHookAfterListing = nil }
}

// AddDuplicateRecord makes root's index hold, besides the INBOX record at
// UID uid, a second record of the same message GUID at UID dup for the
// file name file, with the mailbox's stamp taken from the disk (as an
// apply's commit records it), and forgets that the index was checked for
// such records: the state an old bug left (dupguid.go).
func AddDuplicateRecord(root string, uid, dup uint32, file string) error {
	r, err := Open(context.Background(), maildir.Location{Root: root}, Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	return r.store.db.Update(func(tx *bolt.Tx) error {
		boxes, err := allBoxes(tx)
		if err != nil {
			return err
		}
		for _, b := range boxes {
			if b.Dir != "" || b.Deleted {
				continue
			}
			bt, err := openBoxTx(tx, b)
			if err != nil {
				return err
			}
			m, err := bt.get(uid)
			if err != nil || m == nil {
				return fmt.Errorf("no record at UID %d: %v", uid, err)
			}
			c := *m
			c.UID, c.File, c.Base = dup, file, baseOf(file)
			if err := bt.put(&c); err != nil {
				return err
			}
			b.UIDNext = max(b.UIDNext, dup+1)
			b.Messages++
			b.Stamp = stampOf(root)
			if err := putBox(tx, b); err != nil {
				return err
			}
			return tx.Bucket(bMeta).Delete(metaDupChecked)
		}
		return fmt.Errorf("no INBOX")
	})
}

// ForgetMessage removes the message at uid of mailbox name from the index
// at root/twinbox.db as if the index had never held it (no tombstone):
// an index out of step with its peer's saved state, for the tests of the
// heal.
func ForgetMessage(root, name string, uid uint32) error {
	return updateBox(root, name, func(tx *bolt.Tx, box *Box) error {
		bb, err := buckets(tx, box.GUID, false)
		if err != nil || bb == nil {
			return fmt.Errorf("mailbox %q: no messages (%v)", name, err)
		}
		v := bb.uid.Get(u32(uid))
		if v == nil {
			return fmt.Errorf("mailbox %q: no UID %d", name, uid)
		}
		m, err := decodeMsg(v)
		if err != nil {
			return err
		}
		if err := bb.uid.Delete(u32(uid)); err != nil {
			return err
		}
		var mods [][]byte
		_ = bb.mod.ForEach(func(k, v []byte) error {
			if string(v) == string(u32(uid)) {
				mods = append(mods, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range mods {
			if err := bb.mod.Delete(k); err != nil {
				return err
			}
		}
		return tx.Bucket(bGUIDs).Delete(guidKey(m.GUID, box.GUID, uid))
	})
}

// SetIndexFlags gives the message at uid of mailbox name, in the index at
// root/twinbox.db, the flags flags (set, T 0) and a new modseq, leaving its
// file name: an index out of step with itself, for the tests of the heal.
func SetIndexFlags(root, name string, uid uint32, flags ...string) error {
	return updateBox(root, name, func(tx *bolt.Tx, box *Box) error {
		bt, err := openBoxTx(tx, box)
		if err != nil {
			return err
		}
		v := bt.bb.uid.Get(u32(uid))
		if v == nil {
			return fmt.Errorf("mailbox %q: no UID %d", name, uid)
		}
		m, err := decodeMsg(v)
		if err != nil {
			return err
		}
		m.Flags = model.Flags{}
		for _, f := range flags {
			m.Flags[f] = model.FlagVal{Set: true}
		}
		if err := bt.put(m); err != nil {
			return err
		}
		return putBox(tx, box)
	})
}

// updateBox runs f in one write transaction of the index at
// root/twinbox.db, with its live mailbox called name.
func updateBox(root, name string, f func(tx *bolt.Tx, box *Box) error) error {
	db, err := bolt.Open(filepath.Join(root, DBName), 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		box, err := liveBoxNamed(tx, name)
		if err != nil {
			return err
		}
		return f(tx, box)
	})
}

// liveBoxNamed finds the live mailbox called name.
func liveBoxNamed(tx *bolt.Tx, name string) (*Box, error) {
	var box *Box
	err := tx.Bucket(bBoxes).ForEach(func(_, v []byte) error {
		var b Box
		if err := json.Unmarshal(v, &b); err != nil {
			return err
		}
		if b.Name == name && !b.Deleted {
			box = &b
		}
		return nil
	})
	if err != nil || box == nil {
		return nil, fmt.Errorf("mailbox %q: %v", name, err)
	}
	return box, nil
}

// SetTestHookFrozenFileClock makes every mtime a stamp reads, and the time
// a stamp is taken, ns: a file system whose clock never moves.
func SetTestHookFrozenFileClock(ns int64) func() {
	testHookFrozenFileClock = ns
	return func() { testHookFrozenFileClock = 0 }
}

// SetTestHookBeforeMissingRecheck makes a scan call f with the name of the
// first mailbox it found no directory and no DELETE record for, before it
// looks again (a client's DELETE logging the delete then).
func SetTestHookBeforeMissingRecheck(f func(name string)) func() {
	testHookBeforeMissingRecheck = f
	return func() { testHookBeforeMissingRecheck = nil }
}

// SetTestHookBeforeDirMove makes a mailbox directory's move or removal
// call f with the directory right before the rename(2), with all the locks
// the move takes held.
func SetTestHookBeforeDirMove(f func(dir string)) func() {
	testHookBeforeDirMove = f
	return func() { testHookBeforeDirMove = nil }
}
