package index

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// TmpPrefix starts the names of the temporary directories twinbox renames
// mailboxes through; a scan never takes such a name for a rename.
const TmpPrefix = "twinbox-tmp-"

// ScanResult reports what a scan found.
type ScanResult struct {
	Changed bool               // the index changed
	Held    []replica.HeldInfo // mailboxes with expunges held back
}

// diskFile is a message file found in cur/ or new/.
type diskFile struct {
	name  string
	inNew bool
	fn    maildir.FileName
}

func stampOf(dir string) Stamp {
	var st Stamp
	st.Cur = mtimeNS(filepath.Join(dir, "cur"))
	st.New = mtimeNS(filepath.Join(dir, "new"))
	if fi, err := os.Stat(filepath.Join(dir, "dovecot-uidlist")); err == nil {
		st.Uidlist = fi.ModTime().UnixNano()
		st.UidlistSize = fi.Size()
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.UidlistIno = int64(sys.Ino)
		}
	} else {
		st.Uidlist = -1
	}
	st.Keywords = mtimeNS(filepath.Join(dir, "dovecot-keywords"))
	return st
}

func mtimeNS(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return fi.ModTime().UnixNano()
}

// Scan brings the index up to date with what is on disk. When nothing
// changed it costs a directory listing of the root and a few stat calls
// per mailbox.
func (r *Replica) Scan(ctx context.Context) (*ScanResult, error) {
	res := &ScanResult{}
	if !r.opt.DryRun {
		if err := maildir.CreateMailboxDirs(r.loc.Root); err != nil {
			return nil, r.wrap("INBOX", err)
		}
	}
	var dirs []maildir.MailboxDir
	var err error
	if _, serr := os.Stat(r.loc.Root); serr == nil || !r.opt.DryRun {
		if dirs, err = r.loc.ListMailboxes(); err != nil {
			return nil, r.wrap("", fmt.Errorf("listing mailboxes: %w", err))
		}
	}
	var boxes []*Box
	if err := r.store.db.View(func(tx *bolt.Tx) error {
		var err error
		boxes, err = allBoxes(tx)
		return err
	}); err != nil {
		return nil, r.wrap("", err)
	}
	byGUID := map[model.MailboxGUID]*Box{}
	byDir := map[string]*Box{}
	for _, b := range boxes {
		byGUID[b.GUID] = b
		if !b.Deleted && !b.Missing {
			byDir[b.Dir] = b
		}
	}

	found := map[model.MailboxGUID]bool{}
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rel, err := filepath.Rel(r.loc.Root, d.Dir)
		if err != nil {
			return nil, r.wrap(d.Name, err)
		}
		if rel == "." {
			rel = ""
		}
		changed, err := r.scanDir(ctx, d.Name, d.Dir, rel, byGUID, byDir, found, res)
		if err != nil {
			return nil, err
		}
		res.Changed = res.Changed || changed
	}

	// Mailboxes the index knows that no directory holds any more.
	var logRecs []maildir.LogRecord
	logRead := false
	for _, b := range boxes {
		if found[b.GUID] || b.Deleted || b.Missing {
			continue
		}
		if !logRead {
			logRecs, err = maildir.ReadMailboxLog(r.loc.Root)
			if err != nil {
				r.log.Warn("reading dovecot.mailbox.log", "err", err)
			}
			logRead = true
		}
		if err := r.vanished(b, deleteTime(logRecs, b)); err != nil {
			return nil, err
		}
		res.Changed = true
	}

	ch, err := r.scanSubs()
	if err != nil {
		return nil, err
	}
	res.Changed = res.Changed || ch

	if err := r.store.db.View(func(tx *bolt.Tx) error {
		all, err := allBoxes(tx)
		if err != nil {
			return err
		}
		for _, b := range all {
			if !b.Deleted && b.Held > 0 {
				res.Held = append(res.Held, replica.HeldInfo{Mailbox: b.Name, Count: b.Held})
			}
		}
		return nil
	}); err != nil {
		return nil, r.wrap("", err)
	}
	return res, nil
}

// deleteTime returns the time of the latest DELETE record for b in this
// life of the mailbox (zero if none).
func deleteTime(logRecs []maildir.LogRecord, b *Box) time.Time {
	var delT time.Time
	for _, lr := range logRecs {
		if lr.Type == maildir.LogDeleteMailbox && lr.GUID == [16]byte(b.GUID) && lr.Time.After(delT) && lr.Time.UnixNano() > b.Revived {
			delT = lr.Time
		}
	}
	return delT
}

// vanished handles a mailbox whose directory is gone: a recorded delete
// (Dovecot's log) makes it deleted, anything else makes it missing.
func (r *Replica) vanished(b *Box, delT time.Time) error {
	return r.store.db.Update(func(tx *bolt.Tx) error {
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		if !delT.IsZero() && !model.IsInbox(b.Name) {
			msgs, err := loadMsgs(tx, b.GUID)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				if err := bt.drop(m.UID, &model.Tombstone{GUID: m.GUID, T: r.store.stamp(tx, 0)}); err != nil {
					return err
				}
			}
			b.Deleted = true
			b.DeletedT = r.store.stamp(tx, delT.UnixNano())
			b.Messages = 0
			// A new epoch: should a new mailbox of the same name merge into
			// this one, the merge needs the peer's records in full.
			b.Epoch = randomUint64()
			r.log.Info("mailbox deleted", "mailbox", b.Name, "guid", b.GUID.String())
		} else {
			// The messages are gone, not expunged: each UID stays taken for
			// its message (a refill from the peer may reuse it; nothing else
			// may, contract §3.1), and UIDNEXT stays where it was.
			msgs, err := loadMsgs(tx, b.GUID)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				if err := bt.drop(m.UID, &model.Tombstone{GUID: m.GUID, Lost: true, T: r.store.stamp(tx, 0)}); err != nil {
					return err
				}
			}
			b.Missing = true
			b.Epoch = randomUint64()
			b.Messages = 0
			b.Stamp = Stamp{}
			r.log.Warn("mailbox directory vanished without a recorded delete: it will be restored from the peer", "mailbox", b.Name)
		}
		return putBox(tx, b)
	})
}

// scanDir identifies the mailbox in one directory and scans its contents.
func (r *Replica) scanDir(ctx context.Context, name, dir, rel string, byGUID map[model.MailboxGUID]*Box, byDir map[string]*Box, found map[model.MailboxGUID]bool, res *ScanResult) (bool, error) {
	if !r.opt.DryRun && maildir.BreakOrphanUidlistLock(dir) {
		// A killed twinbox's lock would make Dovecot wait for 120 s.
		r.log.Info("removed a dotlock left by a killed twinbox", "mailbox", name)
	}
	st := stampOf(dir)
	var box *Box
	if b := byDir[rel]; b != nil && st.Uidlist != -1 && st.Uidlist == b.Stamp.Uidlist && st.UidlistSize == b.Stamp.UidlistSize && st.UidlistIno == b.Stamp.UidlistIno {
		box = b
		if box.Stamp == st && box.Name == name && !found[box.GUID] && !r.opt.AllowMassExpunge {
			found[box.GUID] = true
			return false, nil // nothing changed
		}
	}
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, r.wrap(name, err)
	}
	if ul == nil || ul.GUID == [16]byte{} || found[model.MailboxGUID(ul.GUID)] {
		// No uidlist, one without a GUID, or a copy of another mailbox's:
		// give this directory its identity (restoring the index's when the
		// index knows this directory).
		ul, err = r.establishUidlist(ctx, name, dir, byDir[rel], ul, found)
		if err != nil {
			return false, err
		}
	}
	g := model.MailboxGUID(ul.GUID)
	found[g] = true
	box = byGUID[g]
	changed := false
	if box == nil {
		box = &Box{Mailbox: model.Mailbox{GUID: g, Name: name, UIDValidity: ul.UIDValidity, Epoch: randomUint64()}, Dir: rel}
		box.Revived = r.lastDelete(g) // alive now, whatever the log says of before
		byGUID[g] = box
		changed = true
	}
	return r.scanContents(ctx, box, name, dir, rel, ul, st, changed, res)
}

// establishUidlist writes a dovecot-uidlist for a directory that has none
// usable: the index's identity if the index knows the directory, else a new
// one, the way Dovecot would make it.
func (r *Replica) establishUidlist(ctx context.Context, name, dir string, known *Box, old *maildir.Uidlist, found map[model.MailboxGUID]bool) (*maildir.Uidlist, error) {
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		return nil, r.wrap(name, err)
	}
	defer lk.Unlock()
	// Re-read under the lock: Dovecot may have just written one.
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, r.wrap(name, err)
	}
	if ul != nil && ul.GUID != [16]byte{} && !found[model.MailboxGUID(ul.GUID)] {
		return ul, nil
	}
	if ul == nil && known != nil && !found[known.GUID] && !known.Deleted && !known.Missing && r.deletedInLog(known) {
		known = nil // deleted with intent, then made anew: a new mailbox
	}
	if ul == nil && known != nil && !found[known.GUID] {
		// Restore from the index: same GUID, UIDVALIDITY and UIDs.
		nu := &maildir.Uidlist{Version: 3, UIDValidity: known.UIDValidity, NextUID: max(known.UIDNext, 1), GUID: [16]byte(known.GUID)}
		var msgs []*Msg
		if err := r.store.db.View(func(tx *bolt.Tx) error {
			msgs, err = loadMsgs(tx, known.GUID)
			return err
		}); err != nil {
			return nil, r.wrap(name, err)
		}
		files, _, err := listFiles(dir)
		if err != nil {
			return nil, r.wrap(name, err)
		}
		var lost []*Msg
		for _, m := range msgs {
			if m.Held || m.File == "" {
				continue
			}
			if files[baseOf(m.File)] == nil {
				// Gone with the uidlist (the directory was removed and made
				// anew): missing, not expunged; the peer refills it.
				lost = append(lost, m)
				continue
			}
			rec := maildir.UidRecord{UID: m.UID, FileName: m.File}
			if base := baseOf(m.File); base != m.GUID {
				rec.Set('G', m.GUID)
			}
			nu.Records = append(nu.Records, rec)
			nu.NextUID = max(nu.NextUID, m.UID+1)
		}
		if len(lost) > 0 {
			if err := r.store.db.Update(func(tx *bolt.Tx) error {
				bt, err := openBoxTx(tx, known)
				if err != nil {
					return err
				}
				for _, m := range lost {
					if err := bt.drop(m.UID, &model.Tombstone{GUID: m.GUID, Lost: true, T: r.store.stamp(tx, 0)}); err != nil {
						return err
					}
				}
				known.Epoch = randomUint64() // the peer's records are needed in full
				return putBox(tx, known)
			}); err != nil {
				return nil, r.wrap(name, err)
			}
		}
		if err := r.writeUidlist(dir, nu); err != nil {
			return nil, r.wrap(name, err)
		}
		r.log.Warn("dovecot-uidlist was missing: restored from the index", "mailbox", name, "missing_messages", len(lost))
		return nu, nil
	}
	if ul == nil {
		ul = &maildir.Uidlist{Version: 3, NextUID: 1}
	}
	ul.Version = 3
	ul.GUID = maildir.NewGUID()
	ul.UIDValidity = uint32(r.opt.Now().Unix())
	if found[model.MailboxGUID(ul.GUID)] {
		ul.GUID = maildir.NewGUID()
	}
	if err := r.writeUidlist(dir, ul); err != nil {
		return nil, r.wrap(name, err)
	}
	return ul, nil
}

// lastDelete returns the time (Unix ns) of the latest DELETE record for g
// in dovecot.mailbox.log, 0 if none. Log times are whole seconds: a
// DELETE in the same second as an earlier one is taken for the earlier one
// (the mailbox then comes back from the peer; nothing is lost).
func (r *Replica) lastDelete(g model.MailboxGUID) int64 {
	recs, err := maildir.ReadMailboxLog(r.loc.Root)
	if err != nil {
		r.log.Warn("reading dovecot.mailbox.log", "err", err)
	}
	var t int64
	for _, lr := range recs {
		if lr.Type == maildir.LogDeleteMailbox && lr.GUID == [16]byte(g) {
			t = max(t, lr.Time.UnixNano())
		}
	}
	return t
}

// deletedInLog reports whether dovecot.mailbox.log records a delete of b in
// its current life.
func (r *Replica) deletedInLog(b *Box) bool {
	recs, err := maildir.ReadMailboxLog(r.loc.Root)
	if err != nil {
		r.log.Warn("reading dovecot.mailbox.log", "err", err)
	}
	return !deleteTime(recs, b).IsZero()
}

// uidlistIDs returns the message GUID of each uidlist record whose file
// exists ("" for the others): its G field, else its base. One GUID on two
// records (a client copied a message into a mailbox that holds it
// already): the record whose file has that base keeps it, else the first;
// the others fall back to their bases. A file listed twice counts once.
func uidlistIDs(ul *maildir.Uidlist, files map[string]*diskFile) []string {
	ids := make([]string, len(ul.Records))
	var owner map[string]int
	for _, rec := range ul.Records {
		if _, ok := rec.Get('G'); ok {
			owner = map[string]int{}
			break
		}
	}
	if owner == nil {
		// No G fields (the usual case): every file is its own GUID.
		taken := make(map[string]bool, len(ids))
		for i, rec := range ul.Records {
			base := baseOf(rec.FileName)
			if files[base] != nil && !taken[base] {
				ids[i] = base
				taken[base] = true
			}
		}
		return ids
	}
	for i, rec := range ul.Records {
		base := baseOf(rec.FileName)
		if files[base] == nil {
			continue
		}
		g := base
		if v, ok := rec.Get('G'); ok && v != "" {
			g = v
		}
		ids[i] = g
		if o, ok := owner[g]; !ok || (baseOf(ul.Records[o].FileName) != g && base == g) {
			owner[g] = i
		}
	}
	taken := make(map[string]bool, len(ids))
	for i, rec := range ul.Records {
		g := ids[i]
		if g == "" {
			continue
		}
		if owner[g] != i {
			g = baseOf(rec.FileName)
		}
		if taken[g] {
			ids[i] = "" // the same file listed twice
			continue
		}
		ids[i] = g
		taken[g] = true
	}
	return ids
}

func baseOf(file string) string {
	if i := strings.IndexByte(file, ':'); i >= 0 {
		return file[:i]
	}
	return file
}

// listFiles reads cur/ and new/.
func listFiles(dir string) (map[string]*diskFile, []string, error) {
	files := map[string]*diskFile{}
	var bad []string
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, nil, err
		}
		for _, e := range ents {
			if !e.Type().IsRegular() && e.Type() != 0 {
				continue
			}
			fn, err := maildir.ParseFileName(e.Name())
			if err != nil {
				bad = append(bad, sub+"/"+e.Name())
				continue
			}
			if old, ok := files[fn.Base]; ok && !old.inNew {
				continue // the cur/ copy wins over new/ (Dovecot mid-move)
			}
			files[fn.Base] = &diskFile{name: e.Name(), inNew: sub == "new", fn: fn}
		}
	}
	return files, bad, nil
}

// flagsOf translates a file name's flags to model names.
func flagsOf(fn maildir.FileName, kw []string) map[string]bool {
	out := map[string]bool{}
	for _, p := range []struct {
		f    maildir.Flags
		name string
	}{
		{maildir.FlagDraft, model.FlagDraft}, {maildir.FlagFlagged, model.FlagFlagged},
		{maildir.FlagPassed, model.FlagPassed}, {maildir.FlagReplied, model.FlagAnswered},
		{maildir.FlagSeen, model.FlagSeen}, {maildir.FlagTrashed, model.FlagDeleted},
	} {
		if fn.Flags&p.f != 0 {
			out[p.name] = true
		}
	}
	for i := 0; i < 26; i++ {
		if fn.Keywords&(1<<i) != 0 && i < len(kw) && kw[i] != "" {
			out[kw[i]] = true
		}
	}
	return out
}

// scanContents brings the index's records of one mailbox up to date.
func (r *Replica) scanContents(ctx context.Context, box *Box, name, dir, rel string, ul *maildir.Uidlist, st Stamp, changed bool, res *ScanResult) (bool, error) {
	if box.Deleted || box.Missing {
		// It is back (restored by hand, or recreated): a new epoch.
		if box.Deleted {
			box.Revived = r.lastDelete(box.GUID)
		}
		box.Deleted, box.Missing, box.DeletedT, box.MergedInto = false, false, 0, model.MailboxGUID{}
		box.Epoch = randomUint64()
		changed = true
	}
	if box.Name != name && !strings.HasPrefix(filepath.Base(rel), "."+TmpPrefix) && !strings.HasPrefix(filepath.Base(rel), TmpPrefix) {
		changed = true
	}
	box.Dir = rel
	if !changed && box.Stamp == st && !r.opt.AllowMassExpunge {
		return false, nil
	}

	files, bad, err := listFiles(dir)
	if err != nil {
		return false, r.wrap(name, err)
	}
	for _, b := range bad {
		r.log.Warn("ignoring a file whose name is not a Maildir name", "mailbox", name, "file", b)
	}
	inList := map[string]bool{}
	for _, rec := range ul.Records {
		inList[baseOf(rec.FileName)] = true
	}
	var fresh []string
	for base := range files {
		if !inList[base] {
			fresh = append(fresh, base)
		}
	}
	reborn, err := r.rebornUIDs(box, ul, files)
	if err != nil {
		return false, r.wrap(name, err)
	}
	if len(fresh) > 0 || len(reborn) > 0 || ul.GUID == [16]byte{} {
		// Files without UIDs: assign them under Dovecot's lock, as Dovecot
		// would, in name order (delivery order for Dovecot-style names).
		ul, files, err = r.assignUIDs(ctx, name, dir, ul, reborn)
		if err != nil {
			return false, err
		}
	}
	kw, _, err := maildir.ReadKeywords(dir)
	if err != nil {
		return false, r.wrap(name, err)
	}

	var held int
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		if box.UIDValidity != ul.UIDValidity && box.UIDValidity != 0 {
			// Same GUID under a new UIDVALIDITY: old records mean nothing.
			bt, err := openBoxTx(tx, box)
			if err != nil {
				return err
			}
			if err := bt.resetMessages(); err != nil {
				return err
			}
			box.Epoch = randomUint64()
		}
		box.UIDValidity = ul.UIDValidity
		if box.Name != name && !strings.Contains(rel, TmpPrefix) {
			box.NameT = r.store.stamp(tx, box.NameT)
			box.Name = name
		}
		if box.NameT == 0 {
			box.NameT = r.store.stamp(tx, 0)
		}
		box.UIDNext = max(box.UIDNext, ul.NextUID)
		bt, err := openBoxTx(tx, box)
		if err != nil {
			return err
		}
		old, err := loadMsgs(tx, box.GUID)
		if err != nil {
			return err
		}
		oldBy := map[uint32]*Msg{}
		for _, m := range old {
			oldBy[m.UID] = m
		}
		// With dovecot-keywords unchanged, a file name the index knows
		// stands for the flags the index has.
		kwSame := box.Stamp.Keywords == st.Keywords
		// Where each message GUID lives in the uidlist now: a record whose
		// UID changed hands, or vanished, while its message lives on at
		// another UID was renumbered (an interrupted apply, or Dovecot), not
		// expunged.
		//
		// Identities: a message's GUID is its G field, else its base. One
		// GUID on two records (a client copied a message into a mailbox
		// that holds it already): the record whose file has that base
		// keeps it, else the first; the others fall back to their bases.
		// A file listed twice counts once.
		ids := uidlistIDs(ul, files)
		liveAt := map[string]uint32{}
		for i, rec := range ul.Records {
			if ids[i] != "" {
				liveAt[ids[i]] = rec.UID
			}
		}
		retire := func(m *Msg) *model.Tombstone {
			t := &model.Tombstone{GUID: m.GUID, T: r.store.stamp(tx, 0)}
			if to, ok := liveAt[m.GUID]; ok && to != m.UID {
				t.MovedTo = to
			}
			return t
		}
		// renumberedFrom finds the record a message had before it moved to
		// UID u (built only when a new record needs it).
		var oldByGUID map[string]*Msg
		renumberedFrom := func(g string, u uint32) *Msg {
			if liveAt[g] != u {
				return nil
			}
			if oldByGUID == nil {
				oldByGUID = make(map[string]*Msg, len(old))
				for _, m := range old {
					oldByGUID[m.GUID] = m
				}
			}
			if o := oldByGUID[g]; o != nil && o.UID != u {
				return o
			}
			return nil
		}
		seen := map[uint32]bool{}
		for i, rec := range ul.Records {
			base := baseOf(rec.FileName)
			f := files[base]
			guid := ids[i]
			if f == nil || guid == "" {
				continue
			}
			seen[rec.UID] = true
			om := oldBy[rec.UID]
			if kwSame && om != nil && om.GUID == guid && om.File == f.name && om.New == f.inNew && !om.Held {
				continue // the same file name means the same flags: unchanged
			}
			want := flagsOf(f.fn, kw)
			if om != nil && om.GUID != guid {
				if err := bt.drop(om.UID, retire(om)); err != nil {
					return err
				}
				om = nil
			}
			if om == nil {
				m := &Msg{Message: model.Message{UID: rec.UID, GUID: guid, New: f.inNew}, File: f.name}
				if o := renumberedFrom(guid, rec.UID); o != nil && o.Born != 0 {
					m.Born = o.Born // the same instance at a new UID
				} else {
					m.Born = r.store.stamp(tx, 0)
				}
				if base != guid {
					m.Base = base
				}
				for n := range want {
					if m.Flags == nil {
						m.Flags = make(model.Flags, len(want))
					}
					m.Flags[n] = model.FlagVal{Set: true}
				}
				fi, err := os.Stat(filepath.Join(dir, subdir(f.inNew), f.name))
				if err != nil {
					continue // gone since the listing: the next scan sees it
				}
				m.Size = fi.Size()
				m.Mtime = fi.ModTime().UnixNano()
				if f.fn.VSize > 0 {
					m.VSize = f.fn.VSize
				}
				if err := bt.put(m); err != nil {
					return err
				}
				changed = true
				continue
			}
			flagsChanged := om.Held
			nf := model.Flags{}
			for k, v := range om.Flags {
				nf[k] = v
			}
			for n := range want {
				if !nf[n].Set {
					nf[n] = model.FlagVal{Set: true, T: r.store.stamp(tx, nf[n].T)}
					flagsChanged = true
				}
			}
			for n, v := range nf {
				if v.Set && !want[n] && knownLocally(n, kw) {
					nf[n] = model.FlagVal{Set: false, T: r.store.stamp(tx, v.T)}
					flagsChanged = true
				}
			}
			if flagsChanged {
				om.Flags, om.Held, om.File, om.New = nf, false, f.name, f.inNew
				if err := bt.put(om); err != nil {
					return err
				}
				changed = true
			} else if om.File != f.name || om.New != f.inNew {
				// Moved new/ -> cur/ or renamed without a flag change: no modseq.
				om.File, om.New = f.name, f.inNew
				if err := bt.putQuiet(om); err != nil {
					return err
				}
			}
		}
		// Records whose files are gone.
		var gone []*Msg
		live := 0
		for _, m := range old {
			if !m.Held {
				live++
			}
			if !seen[m.UID] && !m.Held {
				if to, ok := liveAt[m.GUID]; ok && to != m.UID {
					// Renumbered, not gone: no expunge, and no mass-expunge count.
					if err := bt.drop(m.UID, retire(m)); err != nil {
						return err
					}
					changed = true
					continue
				}
				gone = append(gone, m)
			}
		}
		hold := !r.opt.AllowMassExpunge && len(gone) > r.opt.MassExpungeMin &&
			float64(len(gone)) > r.opt.MassExpungeFraction*float64(live) &&
			box.Special != `\Trash` && box.Special != `\Junk` && !r.opt.MassExpungeExempt(name)
		for _, m := range gone {
			if hold {
				m.Held = true
				if err := bt.put(m); err != nil {
					return err
				}
				held++
			} else if err := bt.drop(m.UID, &model.Tombstone{GUID: m.GUID, T: r.store.stamp(tx, 0)}); err != nil {
				return err
			}
			changed = true
		}
		if r.opt.AllowMassExpunge {
			for _, m := range old {
				if m.Held && !seen[m.UID] {
					if err := bt.drop(m.UID, &model.Tombstone{GUID: m.GUID, T: r.store.stamp(tx, 0)}); err != nil {
						return err
					}
					changed = true
				}
			}
		}
		box.Keywords = kw
		box.Stamp = st
		box.Messages = len(seen)
		box.Held = 0 // (gone records were marked held in place above)
		for _, m := range old {
			if m.Held && !seen[m.UID] && !r.opt.AllowMassExpunge {
				box.Held++
			}
		}
		return putBox(tx, box)
	})
	if err != nil {
		return false, r.wrap(name, err)
	}
	if held > 0 {
		r.log.Warn("mass expunge held back: run with --allow-mass-expunge to replicate it", "mailbox", name, "messages", held)
	}
	return changed, nil
}

// knownLocally reports whether a flag name can be seen in a file name of
// this mailbox (keywords beyond the 26 letters live only in the index).
func knownLocally(n string, kw []string) bool {
	if strings.HasPrefix(n, `\`) || n == model.FlagPassed {
		return true
	}
	for i, k := range kw {
		if i >= 26 {
			break
		}
		if k == n {
			return true
		}
	}
	return false
}

func subdir(inNew bool) string {
	if inNew {
		return "new"
	}
	return "cur"
}

// assignUIDs gives UIDs to files the uidlist does not list yet, holding
// Dovecot's lock, and returns the new uidlist and listing.
// rebornUIDs returns the UIDs of uidlist records that the index has retired
// (expunged, renumbered, or kept for another message) whose files are there
// again: they must get new UIDs.
func (r *Replica) rebornUIDs(box *Box, ul *maildir.Uidlist, files map[string]*diskFile) (map[uint32]bool, error) {
	reborn := map[uint32]bool{}
	if box.UIDValidity != ul.UIDValidity {
		return reborn, nil // the index's records are of another UIDVALIDITY
	}
	err := r.store.db.View(func(tx *bolt.Tx) error {
		bb, err := buckets(tx, box.GUID, false)
		if err != nil || bb == nil {
			return err
		}
		for _, rec := range ul.Records {
			if files[baseOf(rec.FileName)] == nil || bb.uid.Get(u32(rec.UID)) != nil {
				continue
			}
			tv := bb.tomb.Get(u32(rec.UID))
			if tv == nil {
				continue
			}
			var t model.Tombstone
			if err := json.Unmarshal(tv, &t); err != nil {
				return err
			}
			if !(t.Lost && t.GUID == rec.GUID()) {
				reborn[rec.UID] = true
			}
		}
		return nil
	})
	return reborn, err
}

func (r *Replica) assignUIDs(ctx context.Context, name, dir string, seen *maildir.Uidlist, reborn map[uint32]bool) (*maildir.Uidlist, map[string]*diskFile, error) {
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		return nil, nil, r.wrap(name, err)
	}
	defer lk.Unlock()
	var ul *maildir.Uidlist
	if r.opt.DryRun {
		c := *seen
		c.Records = append([]maildir.UidRecord(nil), seen.Records...)
		ul = &c
	} else if ul, _, err = maildir.ReadUidlist(dir); err != nil {
		return nil, nil, r.wrap(name, err)
	}
	files, _, err := listFiles(dir)
	if err != nil {
		return nil, nil, r.wrap(name, err)
	}
	if len(reborn) > 0 {
		kept := ul.Records[:0:0]
		for _, rec := range ul.Records {
			if reborn[rec.UID] {
				r.log.Warn("expunged message reappeared: it gets a new UID", "mailbox", name, "uid", rec.UID)
				continue
			}
			kept = append(kept, rec)
		}
		ul.Records = kept
	}
	inList := map[string]bool{}
	for _, rec := range ul.Records {
		inList[baseOf(rec.FileName)] = true
	}
	var fresh []string
	for base := range files {
		if !inList[base] {
			fresh = append(fresh, base)
		}
	}
	if len(fresh) == 0 && ul.GUID != [16]byte{} {
		return ul, files, nil
	}
	sort.Slice(fresh, func(i, j int) bool { return lessName(fresh[i], fresh[j]) })
	if ul.NextUID == 0 {
		ul.NextUID = 1
	}
	for _, base := range fresh {
		f := files[base]
		rec := maildir.UidRecord{UID: ul.NextUID, FileName: f.name}
		ul.Records = append(ul.Records, rec)
		ul.NextUID++
	}
	if ul.GUID == [16]byte{} {
		ul.GUID = maildir.NewGUID()
	}
	if err := r.writeUidlist(dir, ul); err != nil {
		return nil, nil, r.wrap(name, err)
	}
	return ul, files, nil
}

// lessName orders Dovecot-style names by their leading seconds, then text.
func lessName(a, b string) bool {
	sa, sb := leadingInt(a), leadingInt(b)
	if sa != sb {
		return sa < sb
	}
	return a < b
}

func leadingInt(s string) int64 {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, _ := strconv.ParseInt(s[:i], 10, 64)
	return n
}

// scanSubs reads the subscriptions file if it changed.
func (r *Replica) scanSubs() (bool, error) {
	path := filepath.Join(r.loc.Root, "subscriptions")
	m := mtimeNS(path)
	changed := false
	same := false
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bMeta).Get([]byte("subs_stamp"))
		same = v != nil && string(v) == strconv.FormatInt(m, 10)
		return nil
	})
	if same {
		return false, nil
	}
	err := r.store.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		var names []string
		if m != -1 {
			var err error
			names, _, err = r.loc.ReadSubscriptions()
			if err != nil {
				return err
			}
		}
		want := map[string]bool{}
		for _, n := range names {
			want[model.NormName(n)] = true
		}
		cur, err := loadSubs(tx)
		if err != nil {
			return err
		}
		have := map[string]model.Subscription{}
		for _, s := range cur {
			have[s.Name] = s
		}
		for n := range want {
			if s, ok := have[n]; !ok || !s.Subscribed {
				if err := putSub(tx, model.Subscription{Name: n, Subscribed: true, T: r.store.stamp(tx, s.T)}); err != nil {
					return err
				}
				changed = true
			}
		}
		for n, s := range have {
			if s.Subscribed && !want[n] {
				if err := putSub(tx, model.Subscription{Name: n, Subscribed: false, T: r.store.stamp(tx, s.T)}); err != nil {
					return err
				}
				changed = true
			}
		}
		return meta.Put([]byte("subs_stamp"), []byte(strconv.FormatInt(m, 10)))
	})
	if err != nil {
		return false, r.wrap("", fmt.Errorf("subscriptions: %w", err))
	}
	return changed, nil
}

// unlocker is a held lock (or none, in a dry run).
type unlocker interface{ Unlock() error }

type noLock struct{}

func (noLock) Unlock() error { return nil }

// lockUidlist takes Dovecot's lock, except in a dry run, which writes
// nothing to the mail store.
func (r *Replica) lockUidlist(ctx context.Context, dir string) (unlocker, error) {
	if r.opt.DryRun {
		return noLock{}, nil
	}
	lk, err := maildir.LockUidlistOrphans(ctx, dir, r.opt.LockTimeout)
	if err != nil {
		return nil, err
	}
	// Holding both the replica's lock and this mailbox's, any temporary
	// file of ours here is an orphan of a killed twinbox.
	removeOrphanTemps(dir)
	return lk, nil
}

// writeUidlist writes a scan's uidlist; a dry run keeps it in the
// (throw-away) index only.
func (r *Replica) writeUidlist(dir string, ul *maildir.Uidlist) error {
	if r.opt.DryRun {
		return nil
	}
	return maildir.WriteUidlist(dir, ul)
}
