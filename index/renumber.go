package index

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
)

// A renumbered message gets a new file name (applyBox step 2). The renames
// happen before the uidlist that names the new files is written, so an
// apply killed in between would leave files Dovecot and the next scan know
// under no UID while their old names are listed without a file. The
// renames are therefore journaled in the index first (one entry per
// mailbox directory) and rolled back when the replica opens next, unless
// the uidlist names the new files (then the apply got that far, and the
// scan finds the messages at their new UIDs by their G fields). The index
// commit of the mailbox clears its entry.

// renumRename is one file renamed for a renumbering, in dir/Sub; with
// Old empty, a file linked under a fresh base for an add (undone by
// removing it).
type renumRename struct {
	Sub string `json:"sub"`
	Old string `json:"old"`
	New string `json:"new"`
}

var renumPrefix = []byte("renum\x00")

func renumKey(dir string) []byte { return append(append([]byte(nil), renumPrefix...), dir...) }

// journalRenumbers records (or, with none, clears) the renames of dir.
func (r *Replica) journalRenumbers(dir string, renames []renumRename) error {
	if r.opt.DryRun {
		return nil
	}
	if len(renames) == 0 {
		exists := false
		_ = r.store.db.View(func(tx *bolt.Tx) error {
			exists = tx.Bucket(bMeta).Get(renumKey(dir)) != nil
			return nil
		})
		if !exists {
			return nil
		}
	}
	return r.store.db.Update(func(tx *bolt.Tx) error {
		if len(renames) == 0 {
			return tx.Bucket(bMeta).Delete(renumKey(dir))
		}
		v, err := json.Marshal(renames)
		if err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(renumKey(dir), v)
	})
}

// clearRenumbers removes dir's journal entry within an index commit.
func clearRenumbers(tx *bolt.Tx, dir string) error {
	return tx.Bucket(bMeta).Delete(renumKey(dir))
}

// undoRenumbers renames the files of renames back, last first.
func undoRenumbers(dir string, renames []renumRename) {
	for i := len(renames) - 1; i >= 0; i-- {
		rn := renames[i]
		if rn.Old == "" {
			// An add's link: the message comes again with the next sync.
			_ = os.Remove(filepath.Join(dir, rn.Sub, rn.New))
			continue
		}
		from, to := filepath.Join(dir, rn.Sub, rn.New), filepath.Join(dir, rn.Sub, rn.Old)
		if _, err := os.Lstat(to); err == nil {
			continue // never over an existing name
		}
		_ = os.Rename(from, to)
	}
}

// replayRenumbers rolls back the renames of applies killed before their
// uidlist named the new files, under each mailbox's uidlist lock.
func (r *Replica) replayRenumbers(ctx context.Context) error {
	type entry struct {
		dir     string
		renames []renumRename
	}
	var entries []entry
	if err := r.store.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bMeta).Cursor()
		for k, v := c.Seek(renumPrefix); k != nil && bytes.HasPrefix(k, renumPrefix); k, v = c.Next() {
			var rs []renumRename
			if err := json.Unmarshal(v, &rs); err != nil {
				return err
			}
			entries = append(entries, entry{dir: string(k[len(renumPrefix):]), renames: rs})
		}
		return nil
	}); err != nil {
		return r.wrap("", err)
	}
	for _, e := range entries {
		if rel, err := filepath.Rel(r.loc.Root, e.dir); err != nil || (rel != "." && !filepath.IsLocal(rel)) {
			// Not under this root (never written so): drop it.
			if err := r.journalRenumbers(e.dir, nil); err != nil {
				return err
			}
			continue
		}
		done, err := r.replayOne(ctx, e.dir, e.renames)
		if err != nil {
			return err
		}
		// The renames the uidlist names stay journaled until a scan of
		// the mailbox has read them (scanContents clears the entry): an
		// Open without that scan (a sync whose peer failed first) must
		// not lose them, or the next scan reads the renumbered files as
		// expunges plus new copies (TestKilledRenumberingAfterItsUidlistKeepsTheMessage).
		if err := r.journalRenumbers(e.dir, done); err != nil {
			return err
		}
	}
	return nil
}

// replayOne rolls back the renames of dir that its uidlist does not name
// and returns those of renumbered files it names (r.renumbered).
func (r *Replica) replayOne(ctx context.Context, dir string, renames []renumRename) ([]renumRename, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, nil // the mailbox is gone (deleted or renamed by a client)
	}
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, r.wrap(r.rel(dir), err)
	}
	defer lk.Unlock()
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, r.wrap(r.rel(dir), err)
	}
	listed := map[string]bool{}
	if ul != nil {
		for _, rec := range ul.Records {
			listed[rec.Base()] = true
		}
	}
	var undo, done []renumRename
	for _, rn := range renames {
		if !listed[baseOf(rn.New)] {
			undo = append(undo, rn)
		} else if rn.Old != "" {
			if r.renumbered == nil {
				r.renumbered = map[string]string{}
			}
			r.renumbered[baseOf(rn.New)] = baseOf(rn.Old)
			done = append(done, rn)
		}
	}
	undoRenumbers(dir, undo)
	if len(undo) > 0 {
		r.log.Warn("rolled back the renumbering of a killed sync", "mailbox", r.rel(dir), "files", len(undo))
	}
	return done, nil
}
