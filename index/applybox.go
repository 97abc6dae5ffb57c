package index

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

var systemLetters = []struct {
	f    maildir.Flags
	name string
}{
	{maildir.FlagDraft, model.FlagDraft}, {maildir.FlagFlagged, model.FlagFlagged},
	{maildir.FlagPassed, model.FlagPassed}, {maildir.FlagReplied, model.FlagAnswered},
	{maildir.FlagSeen, model.FlagSeen}, {maildir.FlagTrashed, model.FlagDeleted},
}

// letters translates flag registers to a file name's flags and keyword
// bits, adding keyword names to kw (at most 26 get a letter).
func letters(f model.Flags, kw []string) (maildir.Flags, uint32, []string) {
	var fl maildir.Flags
	var bits uint32
	for _, p := range systemLetters {
		if f[p.name].Set {
			fl |= p.f
		}
	}
	for _, n := range f.SetNames() {
		if n == "" || n[0] == '\\' || n == model.FlagPassed {
			continue
		}
		idx := -1
		for i, k := range kw {
			if strings.EqualFold(k, n) { // Dovecot matches keywords case-insensitively
				idx = i
				break
			}
		}
		if idx < 0 && len(kw) < 26 && validKeyword(n) {
			kw = append(kw, n)
			idx = len(kw) - 1
		}
		if idx >= 0 && idx < 26 {
			bits |= 1 << idx
		}
	}
	return fl, bits, kw
}

// Test hooks (export_test.go); nil outside tests.
var (
	testHookBeforeUidlistWrite func()
	testHookBeforeApplyBox     func(root string)
	testHookBeforeRename       func(dst string)
	testHookBeforeDeleteLock   func(dir string)
	testHookBetweenListings    func(dir string)
	testHookAfterRename        func(dst string)
	testHookBeforeDirMove      func(dir string) // a mailbox directory about to move or be removed, all locks held
	testHookBeforeAdopt        func(dst string)
	testHookBeforeBoxCommit    func(dir string)
	testHookAfterListing       func(dir string)
	testHookUidlistWrite       func(dir string) // the scan's writes (writeUidlist)
)

// diskAgrees reports whether a file name shows the flags f that the index
// holds for its message. Keywords without a letter in this mailbox's
// dovecot-keywords (kw) are not compared: no file name can show them.
// A file that disagrees was renamed for flags (by Dovecot) after the scan.
func diskAgrees(fn maildir.FileName, f model.Flags, kw []string) bool {
	fl, bits, _ := letters(f, kw[:len(kw):len(kw)])
	mask := uint32(1)<<min(len(kw), 26) - 1
	return fn.Flags == fl && fn.Keywords&mask == bits&mask
}

// validKeyword reports whether a keyword name is an IMAP atom that can
// live in dovecot-keywords.
func validKeyword(n string) bool {
	if len(n) == 0 || len(n) > 200 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == '{' || c == '%' || c == '*' || c == '"' || c == '\\' || c == ']' {
			return false
		}
	}
	return true
}

// applyBox carries out the message work in one mailbox: the on-disk part
// under Dovecot's lock, then the index part.
func (r *Replica) applyBox(ctx context.Context, bp *merge.BoxPlan, adopt *merge.Adopt, tmp []string, res *ApplyResult) (err error) {
	var dir, name string
	defer func() {
		// A client deleted the mailbox (Dovecot removes the directory
		// without the uidlist lock) while we worked in it: what we wrote
		// there went with it and the index has not recorded it. The next
		// sync sees why.
		if err != nil && dir != "" && errors.Is(err, fs.ErrNotExist) && dirGone(dir) {
			skip(res, "mailbox %q: gone during the sync", name)
			err = nil
		}
	}()
	if adopt == nil && bornsOnly(bp) {
		// Born stamps learned from the peer, nothing else: the index only.
		err := r.store.db.Update(func(tx *bolt.Tx) error {
			b, err := getBox(tx, bp.GUID)
			if err != nil || b == nil {
				return err
			}
			bt, err := openBoxTx(tx, b)
			if err != nil {
				return err
			}
			return r.learnBorns(tx, bt, bp.Borns)
		})
		return r.wrap("", err)
	}
	if err := r.markApplying(); err != nil {
		return r.wrap("", err)
	}
	srcGUID := bp.GUID
	if adopt != nil {
		srcGUID = adopt.From
	}
	box, err := r.getBox(srcGUID)
	if err != nil {
		return r.wrap("", err)
	}
	if box == nil {
		return r.errf("", "plan for unknown mailbox %s", srcGUID)
	}
	name = box.Name
	dir, err = r.locate(box)
	if errors.Is(err, fs.ErrNotExist) && !box.Deleted && r.deletedInLog(box) {
		// Deleted by a client since the scan: not made again here.
		skip(res, "mailbox %q: deleted during the sync", name)
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) && !box.Deleted {
		// Vanished since the scan, or never made: make it now.
		dir = filepath.Join(r.loc.Root, box.Dir)
		ul := &maildir.Uidlist{Version: 3, UIDValidity: box.UIDValidity, NextUID: max(1, box.UIDNext), GUID: [16]byte(box.GUID)}
		made, err := r.makeMailbox(dir, ul)
		if err != nil {
			return r.wrap(name, err)
		}
		if !made {
			h, err := readUidlistHeader(dir)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				// Left without its uidlist (a merge made it so): give it.
				if err := maildir.WriteUidlist(dir, ul); err != nil {
					return r.wrap(name, err)
				}
			case err != nil:
				return r.wrap(name, err)
			case model.MailboxGUID(h.GUID) != box.GUID:
				// A client made a folder of that name meanwhile.
				skip(res, "mailbox %q: a folder of that name appeared during the sync", name)
				return nil
			}
		}
	} else if err != nil {
		return r.wrap(name, err)
	}
	if testHookBeforeApplyBox != nil {
		testHookBeforeApplyBox(r.loc.Root)
	}
	if r.opt.BeforeApplyBox != nil {
		r.opt.BeforeApplyBox(dir)
	}
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil && dirGone(dir) {
		skip(res, "mailbox %q: gone during the sync", name)
		return nil
	}
	if err != nil {
		return r.wrap(name, err)
	}
	defer lk.Unlock()

	// Was the index up to date with this mailbox before we touch it? Then
	// it can take the mailbox's stamp after our writes (below), and the
	// next scan need not read the mailbox again.
	at0 := stampClock()
	st0 := stampOf(dir)
	clean := st0 == box.Stamp.raw()
	flagOnly := adopt == nil && !bp.Reset && len(bp.Adds)+len(bp.Moves)+len(bp.Expunges)+len(bp.Release) == 0
	// Flag changes alone, with the uidlist as the index last saw it (same
	// mtime, size and inode): its records are the index's, so only its
	// header is read, and the flagged records come from the index. The
	// uidlist is then not rewritten (checked below).
	light := false
	var ul *maildir.Uidlist
	if flagOnly && st0.Uidlist != -1 && st0.Uidlist == box.Stamp.Uidlist && st0.UidlistSize == box.Stamp.UidlistSize && st0.UidlistIno == box.Stamp.UidlistIno {
		if h, err := readUidlistHeader(dir); err == nil && len(h.Records) == 0 && bp.UIDNext <= h.NextUID {
			ul, light = h, true
		}
	}
	// Adds (and flag changes) alone into a mailbox the index is up to date
	// with: the uidlist's records are the index's, so only its header and
	// last record are parsed, and the new records are appended to it
	// (maildir.UidlistAppend) rather than the whole list rewritten.
	var tail *maildir.UidlistAppend
	addOnly := adopt == nil && !bp.Reset && len(bp.Adds) > 0 && len(bp.Moves)+len(bp.Expunges)+len(bp.Release) == 0
	if ul == nil && addOnly && clean && st0.Uidlist != -1 && uidlistAppends {
		if a, err := maildir.OpenUidlistAppend(dir); err == nil {
			// Only after the file's last record, as Dovecot appends: an
			// add below it (a refill of a UID lost with the directory)
			// takes the long way.
			after := uidlistIs(a, box.Stamp)
			for _, ad := range bp.Adds {
				after = after && ad.Msg.UID >= a.NextUID
			}
			if after {
				tail = a
				defer a.Close()
				h := *a.Header
				h.NextUID = a.NextUID
				ul = &h
			} else {
				a.Close()
			}
		}
	}
	if ul == nil {
		ul, _, err = maildir.ReadUidlist(dir)
		if errors.Is(err, fs.ErrNotExist) {
			// Deleted (by Dovecot, say) since the scan: the next sync sees why.
			skip(res, "mailbox %q: gone during the sync", name)
			return nil
		}
		if err != nil {
			return r.wrap(name, err)
		}
	}
	if model.MailboxGUID(ul.GUID) != box.GUID {
		skip(res, "mailbox %q: the directory now holds mailbox %x", name, ul.GUID)
		return nil
	}
	if ul.UIDValidity == box.UIDValidity && ul.NextUID > box.UIDNext {
		// Dovecot gave out UIDs since the scan: their messages are not in
		// the index yet, and they can lie below the UIDNEXT this sync
		// makes common, under which the next sync takes a record that
		// only one side reports for one both sides have. No saved state
		// from this sync, then: the next one reads and sends them.
		skip(res, "mailbox %q: new messages since the scan (UIDNEXT %d, the scan saw %d)", name, ul.NextUID, box.UIDNext)
	}
	var files map[string]*diskFile
	var flaggedRecs map[uint32]*Msg
	if flagOnly || tail != nil {
		// Only renames within the mailbox: find the files by the names the
		// index has, not by reading a large directory.
		flaggedRecs = oldByUID(r, box.GUID, bp.Flags)
		files = knownFiles(dir, bp.Flags, flaggedRecs)
	} else if clean && adopt == nil && !bp.Reset && len(bp.Moves)+len(bp.Expunges)+len(bp.Release) == 0 {
		// Adds (and flags) into a mailbox the index is up to date with:
		// every file on disk is listed in the uidlist, so a base name the
		// uidlist does not list is free (step 4), and the flagged files
		// are found by their recorded names.
		files = knownFiles(dir, bp.Flags, oldByUID(r, box.GUID, bp.Flags))
	}
	if light || tail != nil {
		partial := true
		for _, f := range bp.Flags {
			if m := flaggedRecs[f.UID]; files == nil || m == nil || m.Held || m.File == "" {
				partial = false // the long way: the whole uidlist
				break
			}
		}
		if !partial {
			light = false
			if tail != nil {
				files, tail = nil, nil // (closed by the defer)
			}
			if ul, _, err = maildir.ReadUidlist(dir); err != nil {
				return r.wrap(name, err)
			}
			if model.MailboxGUID(ul.GUID) != box.GUID {
				skip(res, "mailbox %q: the directory now holds mailbox %x", name, ul.GUID)
				return nil
			}
		}
	}
	listed := files == nil // the full listing: a base not in files has no file
	if files == nil {
		if files, _, err = listFiles(dir); err != nil {
			return r.wrap(name, err)
		}
	}
	kw, _, err := maildir.ReadKeywords(dir)
	if err != nil {
		return r.wrap(name, err)
	}
	kwBefore := len(kw)

	// The index records the plan touches: all of them when the mailbox is
	// rewritten, else only those of the moved and flagged UIDs (a flag
	// change in a large mailbox does not decode the whole mailbox).
	oldBy := map[uint32]*Msg{}
	rewritingPlan := adopt != nil || bp.Reset
	if err := r.store.db.View(func(tx *bolt.Tx) error {
		if rewritingPlan {
			old, err := loadMsgs(tx, box.GUID)
			for _, m := range old {
				oldBy[m.UID] = m
			}
			return err
		}
		bb, err := buckets(tx, box.GUID, false)
		if err != nil || bb == nil {
			return err
		}
		get := func(u uint32) error {
			if _, done := oldBy[u]; done {
				return nil
			}
			v := bb.uid.Get(u32(u))
			if v == nil {
				return nil
			}
			m, err := decodeMsg(v)
			if err != nil {
				return fmt.Errorf("UID %d: %w", u, err)
			}
			oldBy[u] = m
			return nil
		}
		for _, mv := range bp.Moves {
			if err := get(mv.From); err != nil {
				return err
			}
			if err := get(mv.To); err != nil {
				return err
			}
		}
		for _, f := range bp.Flags {
			if err := get(f.UID); err != nil {
				return err
			}
		}
		for _, e := range bp.Expunges {
			if err := get(e.UID); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return r.wrap(name, err)
	}

	recs := make(map[uint32]maildir.UidRecord, len(ul.Records)+len(bp.Flags)+len(bp.Adds))
	if light || tail != nil {
		for _, f := range bp.Flags {
			m := flaggedRecs[f.UID]
			rec := maildir.UidRecord{UID: m.UID, FileName: m.File}
			if baseOf(m.File) != m.GUID {
				rec.Set('G', m.GUID)
			}
			recs[m.UID] = rec
		}
	}
	goneLive := 0
	for _, rec := range ul.Records {
		if (adopt != nil || bp.Reset) && files[baseOf(rec.FileName)] == nil {
			if oldBy[rec.UID] != nil {
				goneLive++
			}
			continue // expunged under the old identity: not carried over
		}
		recs[rec.UID] = rec
	}
	if goneLive > 0 {
		// Expunged since the scan (or moved, renamed): the rewrite leaves
		// them out, and the saved state of this sync must not say that
		// both sides hold what the plan said.
		skip(res, "mailbox %q: %d messages went away during the sync", name, goneLive)
	}
	// A record's message GUID is what the index recorded for its file (a
	// copy within the mailbox is known by its own base name, not by its G
	// field: see messageGUIDs); a file the index does not know by its G
	// field or base name.
	byBase := make(map[string]string, len(oldBy))
	for _, m := range oldBy {
		b := m.Base
		if b == "" {
			b = m.GUID
		}
		byBase[b] = m.GUID
	}
	guidOf := func(rec maildir.UidRecord) string {
		if g, ok := byBase[baseOf(rec.FileName)]; ok {
			return g
		}
		if g, ok := rec.Get('G'); ok && g != "" {
			return g
		}
		return baseOf(rec.FileName)
	}
	if adopt != nil && !bp.Reset && adopt.UIDValidity != ul.UIDValidity {
		moveLate(res, name, recs, byBase, oldBy, bp.UIDNext)
	}
	diskNext := ul.NextUID
	rewriting := adopt != nil || bp.Reset
	// An adopt under the UIDVALIDITY the directory already has keeps its
	// UIDs (the merge placed around them): NEXTUID never goes down, and a
	// UID at or above the scan's UIDNEXT that the uidlist does not list was
	// taken since the scan (and perhaps expunged), as without an adopt.
	sameSpace := adopt != nil && !bp.Reset && adopt.UIDValidity == ul.UIDValidity
	if rewriting && !sameSpace {
		diskNext = 0
	}

	// What the index must learn, filled in as the disk changes.
	type flagRec struct {
		uid   uint32
		flags model.Flags
	}
	var (
		expunged []merge.Expunge
		moved    []merge.Move
		flagged  []flagRec
		added    []*Msg
	)
	final := func(uid uint32) model.Flags { // current registers by UID
		if m := oldBy[uid]; m != nil {
			return m.Flags
		}
		return nil
	}

	// The directories this apply changed (renames, links, unlinks): only
	// they are fsynced at the end.
	touched := map[string]bool{}

	// Records kept without their files (expunged or renamed away here),
	// by UID.
	keptGone := map[uint32]bool{}

	// rederive: a flag change or renumbering skipped because the file's
	// flags differ from the index's, where the index holds that very file
	// name. A client's STORE since the scan renames the file, and the next
	// scan sees the new name; an unchanged name with other flags in the
	// index (an index out of step with itself) would look unchanged to
	// every scan, and the same plan would come back every sync.
	rederive := false
	// 1. Expunges (and, for a reset, everything the source does not have).
	exp := bp.Expunges
	if bp.Reset {
		keep := map[string]bool{}
		for _, a := range bp.Adds {
			keep[a.Msg.GUID] = true
		}
		for _, rec := range ul.Records {
			if !keep[guidOf(rec)] {
				exp = append(exp, merge.Expunge{UID: rec.UID, GUID: guidOf(rec)})
			}
		}
	}
	for _, e := range exp {
		rec, ok := recs[e.UID]
		if ok && guidOf(rec) != e.GUID {
			skip(res, "mailbox %q UID %d: expected message %s, found %s", name, e.UID, e.GUID, guidOf(rec))
			continue
		}
		if ok {
			if f := files[baseOf(rec.FileName)]; f != nil {
				p := filepath.Join(dir, subdir(f.inNew), f.name)
				touched[subdir(f.inNew)] = true
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return r.wrap(name, err)
				}
				delete(files, baseOf(rec.FileName))
			}
			if rewriting {
				delete(recs, e.UID)
			} else {
				// The record stays, without its file, as Dovecot leaves an
				// expunged message's record until it rewrites the list: a
				// COPY or MOVE of the message back into this mailbox (its
				// copy elsewhere is named by this file's base) then gets a
				// new file name, never this one under a new UID, which a
				// Dovecot process that still knows it under this UID reads
				// as "Duplicate file entry".
				keptGone[e.UID] = true
			}
		}
		expunged = append(expunged, e)
		res.Expunged++
	}
	for _, e := range bp.Release {
		expunged = append(expunged, e)
	}

	// 2. Moves (new UIDs for messages this side already has). A move to a
	// UID taken since the scan (Dovecot gave it to a new message) is not
	// made, on disk or in the index: the message keeps its UID and the
	// next sync plans again. Nor is a move to a UID that the message of a
	// move not made still holds.
	type moveCand struct {
		mv  merge.Move
		rec maildir.UidRecord
	}
	var cands []moveCand
	to := map[uint32]bool{}
	for _, mv := range bp.Moves {
		rec, ok := recs[mv.From]
		if !ok || guidOf(rec) != mv.GUID {
			skip(res, "mailbox %q UID %d: message %s to renumber not found", name, mv.From, mv.GUID)
			continue
		}
		if to[mv.To] {
			skip(res, "mailbox %q: two messages to renumber to UID %d", name, mv.To)
			continue
		}
		if !rewriting {
			// The file gets a new name that keeps its flags, and the index
			// will hold that name: the file must be there, with the flags
			// the index has.
			if f := files[baseOf(rec.FileName)]; f == nil {
				skip(res, "mailbox %q UID %d: file of %s gone", name, mv.From, mv.GUID)
				continue
			} else if m := oldBy[mv.From]; m != nil && !diskAgrees(f.fn, m.Flags, kw) {
				skip(res, "mailbox %q UID %d: flags of %s changed since the scan (not renumbered)", name, mv.From, mv.GUID)
				rederive = rederive || m.File == f.name
				continue
			}
		}
		to[mv.To] = true
		cands = append(cands, moveCand{mv, rec})
	}
	accepted := make([]bool, len(cands))
	for i := range accepted {
		accepted[i] = true
	}
	for again := true; again; {
		again = false
		vacated := map[uint32]bool{}
		for i, c := range cands {
			if accepted[i] {
				vacated[c.mv.From] = true
			}
		}
		for i, c := range cands {
			u := c.mv.To
			if !accepted[i] || vacated[u] {
				continue
			}
			if _, taken := recs[u]; taken || ((!rewriting || sameSpace) && u < diskNext && oldBy[u] == nil) {
				skip(res, "mailbox %q: UID %d taken since the scan (message %s stays at UID %d)", name, u, c.mv.GUID, c.mv.From)
				accepted[i] = false
				again = true
			}
		}
	}
	for i, c := range cands {
		if accepted[i] {
			delete(recs, c.mv.From)
		}
	}
	pending := map[uint32]maildir.UidRecord{}
	// Under the same UIDVALIDITY a renumbered message also gets a new file
	// name: to Dovecot the old UID's file is gone (expunged) and a new
	// file arrived at the new UID. A file name that changed its UID under
	// Dovecot would contradict the record any Dovecot process still holds
	// in memory ("Duplicate file entry ... (uid 2 -> 7)", then "Expunged
	// message reappeared"). The rename is atomic: at every moment the
	// message has exactly one name. (A rewrite changes the UIDVALIDITY,
	// which makes Dovecot forget every name it knew.)
	newBase := map[uint32]string{} // From -> the base the file now has
	var renames []renumRename
	renameOf := map[int]int{} // candidate -> index in renames
	if !rewriting {
		for i, c := range cands {
			if !accepted[i] {
				continue
			}
			f := files[baseOf(c.rec.FileName)]
			nf := f.fn
			nf.Base = maildir.NewBase(time.Now(), r.nextSeq(), r.opt.Hostname, f.fn.Size, f.fn.VSize)
			renameOf[i] = len(renames)
			renames = append(renames, renumRename{Sub: subdir(f.inNew), Old: f.name, New: nf.String()})
		}
		// A journal first: an apply killed between these renames and the
		// uidlist that names the new files is rolled back when the replica
		// opens next (replayRenumbers). The UIDs they go to stay used if
		// the uidlist named them and was lost before the next scan
		// (journalNext; with adds, journalBorns recorded them).
		if len(renames) > 0 && len(bp.Adds) == 0 {
			var next uint32
			for i, c := range cands {
				if _, ok := renameOf[i]; ok {
					next = max(next, c.mv.To+1)
				}
			}
			if err := r.journalNext(bp.GUID, next); err != nil {
				return r.wrap(name, err)
			}
		}
		if err := r.journalRenumbers(dir, renames); err != nil {
			return r.wrap(name, err)
		}
		for j, rn := range renames {
			touched[rn.Sub] = true
			if err := os.Rename(filepath.Join(dir, rn.Sub, rn.Old), filepath.Join(dir, rn.Sub, rn.New)); err != nil {
				// Renamed (for flags) or expunged by Dovecot just now: undo
				// the renames made, and leave this mailbox for the next sync.
				undoRenumbers(dir, renames[:j])
				if jerr := r.journalRenumbers(dir, nil); jerr != nil {
					return r.wrap(name, jerr)
				}
				if !errors.Is(err, fs.ErrNotExist) {
					return r.wrap(name, err)
				}
				skip(res, "mailbox %q: %s renamed or expunged during the sync (nothing renumbered)", name, rn.Old)
				for i, c := range cands {
					if accepted[i] {
						accepted[i] = false
						recs[c.mv.From] = c.rec
					}
				}
				renameOf = map[int]int{}
				break
			}
		}
	}
	for i, c := range cands {
		if !accepted[i] {
			continue
		}
		rec := c.rec
		if j, ok := renameOf[i]; ok {
			rn := renames[j]
			f := files[baseOf(rec.FileName)]
			nf, _ := maildir.ParseFileName(rn.New)
			delete(files, f.fn.Base)
			files[nf.Base] = &diskFile{name: rn.New, inNew: f.inNew, fn: nf}
			rec.FileName = rn.New
			rec.Set('G', c.mv.GUID)
			r.log.Debug("renumbered", "mailbox", name, "from", c.mv.From, "to", c.mv.To, "old", rn.Old, "new", rn.New)
			newBase[c.mv.From] = nf.Base
		}
		rec.UID = c.mv.To
		recs[c.mv.To] = rec
		moved = append(moved, c.mv)
		res.Moved++
	}
	for i, c := range cands {
		// The old name's record stays at the old UID (see keptGone), unless
		// another message moved there.
		if _, renamed := renameOf[i]; renamed && accepted[i] {
			if _, taken := recs[c.mv.From]; !taken {
				recs[c.mv.From] = c.rec
				keptGone[c.mv.From] = true
			}
		}
	}
	if bp.Reset {
		// Keep files the source has, under the source's UIDs.
		byGUID := map[string]maildir.UidRecord{}
		for _, rec := range recs {
			byGUID[guidOf(rec)] = rec
		}
		recs = map[uint32]maildir.UidRecord{}
		kept := bp.Adds[:0:0]
		var keptTmp []string
		for i, a := range bp.Adds {
			if rec, ok := byGUID[a.Msg.GUID]; ok {
				old := oldBy[rec.UID]
				rec.UID = a.Msg.UID
				pending[a.Msg.UID] = rec
				m := &Msg{Message: a.Msg}
				if old != nil {
					m.Mtime, m.Size = old.Mtime, old.Size
				}
				m.File, m.Base = rec.FileName, baseOf(rec.FileName) // this side's file
				added = append(added, m)
				if tmp[i] != "" {
					os.Remove(tmp[i])
				}
				continue
			}
			kept = append(kept, a)
			keptTmp = append(keptTmp, tmp[i])
		}
		adds := *bp
		adds.Adds = kept
		bp = &adds
		tmp = keptTmp
		// The kept records get their flags set below.
		for _, m := range added {
			bp.Flags = append(bp.Flags, merge.FlagSet{UID: m.UID, GUID: m.GUID, Flags: m.Flags})
		}
	}
	for u, rec := range pending { // a reset's kept messages (recs is empty)
		if _, taken := recs[u]; taken {
			skip(res, "mailbox %q: UID %d taken since the scan", name, u)
			continue
		}
		recs[u] = rec
	}

	// Keywords this apply gives files (flag changes, adds) get their
	// letters in dovecot-keywords before any file carries them, as Dovecot
	// does: a file renamed or added with a letter the list does not have
	// yet (an apply killed before step 5) is read without that keyword by
	// every scan, and by Dovecot. The same order as steps 3 and 4 gives the
	// same letters.
	for _, fset := range bp.Flags {
		_, _, kw = letters(fset.Flags, kw)
	}
	for _, a := range bp.Adds {
		_, _, kw = letters(a.Msg.Flags, kw)
	}
	if len(kw) != kwBefore {
		if err := lk.Check(); err != nil {
			return r.wrap(name, fmt.Errorf("not writing dovecot-keywords: %w", err))
		}
		if err := maildir.WriteKeywords(dir, kw); err != nil {
			return r.wrap(name, err)
		}
		kwBefore = len(kw)
	}

	// 3. Flags: rename within cur/ (new/ -> cur/ when flags are set).
	uidOfMove := map[uint32]uint32{}
	for _, mv := range moved {
		uidOfMove[mv.To] = mv.From
	}
	// staleState: a flag change for a message the uidlist does not have
	// there. A client may have expunged it since the scan (the next scan
	// sees that), or the plan took it from saved state that this replica
	// never matched (a record the peer's state implies and this side never
	// had): then the same plan comes back every sync. Either way the next
	// sync compares this mailbox in full (a new epoch, below).
	staleState := false
	for _, fset := range bp.Flags {
		rec, ok := recs[fset.UID]
		if !ok || guidOf(rec) != fset.GUID {
			skip(res, "mailbox %q UID %d: message %s to flag not found", name, fset.UID, fset.GUID)
			staleState = true
			continue
		}
		cur := final(fset.UID)
		if from, ok := uidOfMove[fset.UID]; ok {
			cur = final(from)
		}
		want := fset.Flags
		if !bp.Exact {
			want = model.Merge(cur, fset.Flags)
		}
		f := files[baseOf(rec.FileName)]
		if f == nil {
			skip(res, "mailbox %q UID %d: file of %s gone", name, fset.UID, fset.GUID)
			continue
		}
		src := fset.UID
		if from, ok := uidOfMove[fset.UID]; ok {
			src = from
		}
		if m := oldBy[src]; m != nil && !m.Held && !diskAgrees(f.fn, cur, kw) {
			// Renamed for flags since the scan (a client's STORE through
			// Dovecot): writing the merged flags would undo that change.
			skip(res, "mailbox %q UID %d: flags of %s changed since the scan", name, fset.UID, fset.GUID)
			rederive = rederive || m.File == f.name
			continue
		}
		var fl maildir.Flags
		var bits uint32
		fl, bits, kw = letters(want, kw)
		nf := f.fn.WithFlags(fl, bits)
		newName := nf.String()
		inNew := f.inNew
		if f.inNew && (fl != 0 || bits != 0) {
			inNew = false
		}
		if newName != f.name || inNew != f.inNew {
			from := filepath.Join(dir, subdir(f.inNew), f.name)
			to := filepath.Join(dir, subdir(inNew), newName)
			touched[subdir(f.inNew)], touched[subdir(inNew)] = true, true
			if err := os.Rename(from, to); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					skip(res, "mailbox %q UID %d: file renamed under us", name, fset.UID)
					continue
				}
				return r.wrap(name, err)
			}
			files[nf.Base] = &diskFile{name: newName, inNew: inNew, fn: nf}
			r.noteFlagChange(name)
		}
		rec.FileName = newName
		recs[fset.UID] = rec
		flagged = append(flagged, flagRec{uid: fset.UID, flags: want})
		res.Flagged++
	}

	// 4. Adds: tmp/ -> cur/ (or new/), never over an existing name.
	inList := make(map[string]bool, len(ul.Records)+len(bp.Adds))
	for _, rec := range recs {
		inList[baseOf(rec.FileName)] = true
	}
	for _, rec := range ul.Records {
		inList[baseOf(rec.FileName)] = true // expunged names stay taken
	}
	// A message this mailbox held before (expunged, moved out and back,
	// or renumbered under a new name) never gets its old file name again:
	// a Dovecot process that still remembers that name under its old UID
	// would see an expunged file come back ("Duplicate file entry",
	// "Expunged message reappeared").
	usedBefore := map[string]bool{}
	if !rewriting && len(bp.Adds) > 0 {
		if err := r.store.db.View(func(tx *bolt.Tx) error {
			for _, a := range bp.Adds {
				if usedIn(tx, box.GUID, a.Msg.GUID) {
					usedBefore[a.Msg.GUID] = true
				}
			}
			return nil
		}); err != nil {
			return r.wrap(name, err)
		}
	}
	// Names first: a file linked under a fresh base carries its message's
	// identity only in the uidlist's G field, so those links are journaled
	// (with the renumbering renames) and removed again when the replica
	// opens next if a killed apply did not get to write the uidlist (else
	// the next scan took them for new messages: duplicates).
	type pendingAdd struct {
		i           int
		base, fname string
		inNew       bool
		nf          maildir.FileName
	}
	var pend []pendingAdd
	planned := map[uint32]bool{}
	journal := renames
	for i, a := range bp.Adds {
		if tmp[i] == "" {
			continue
		}
		u := a.Msg.UID
		// Dovecot may have taken a UID at or above the UIDNEXT of the scan;
		// below it, a UID the uidlist does not list is one the merge knew
		// to be free for this message (it vanished with the directory).
		if _, taken := recs[u]; taken || planned[u] || ((!rewriting || sameSpace) && u < diskNext && u >= box.UIDNext) {
			skip(res, "mailbox %q: UID %d taken since the scan", name, u)
			continue
		}
		base := a.Msg.Base
		if base == "" {
			base = a.Msg.GUID
		}
		if fn, err := maildir.ParseFileName(base); err != nil || fn.Base != base || inList[base] || files[base] != nil || usedBefore[a.Msg.GUID] || (tail != nil && tail.Lists(base)) {
			vsize := a.Msg.VSize
			if vsize <= 0 {
				vsize = -1 // unknown: no ,W= (W=0 makes Dovecot serve an empty body)
			}
			base = maildir.NewBase(time.Now(), r.nextSeq(), r.opt.Hostname, a.Msg.Size, vsize)
		}
		var fl maildir.Flags
		var bits uint32
		fl, bits, kw = letters(a.Msg.Flags, kw)
		nf, _ := maildir.ParseFileName(base)
		nf = nf.WithFlags(fl, bits)
		inNew := a.Msg.New && fl == 0 && bits == 0
		fname := base
		if !inNew {
			nf.HasInfo = true
			fname = nf.String()
		}
		planned[u] = true
		inList[base] = true
		pend = append(pend, pendingAdd{i: i, base: base, fname: fname, inNew: inNew, nf: nf})
		if base != a.Msg.GUID {
			journal = append(journal, renumRename{Sub: subdir(inNew), New: fname})
		}
	}
	if len(journal) > len(renames) {
		if err := r.journalRenumbers(dir, journal); err != nil {
			return r.wrap(name, err)
		}
	}
	for _, p := range pend {
		i, a := p.i, bp.Adds[p.i]
		u := a.Msg.UID
		mt := time.Unix(0, a.Msg.Mtime)
		if err := os.Chtimes(tmp[i], mt, mt); err != nil {
			return r.wrap(name, err)
		}
		dst := filepath.Join(dir, subdir(p.inNew), p.fname)
		touched[subdir(p.inNew)] = true
		if err := maildir.MoveFileNoReplace(tmp[i], dst); err != nil {
			if errors.Is(err, fs.ErrExist) {
				skip(res, "mailbox %q: file name %s taken", name, p.fname)
				continue
			}
			return r.wrap(name, err)
		}
		tmp[i] = ""
		r.log.Debug("added", "mailbox", name, "uid", u, "file", p.fname)
		rec := maildir.UidRecord{UID: u, FileName: p.fname}
		if p.base != a.Msg.GUID {
			rec.Set('G', a.Msg.GUID)
		}
		recs[u] = rec
		files[p.base] = &diskFile{name: p.fname, inNew: p.inNew, fn: p.nf}
		m := &Msg{Message: a.Msg, File: p.fname}
		m.Base, m.New = p.base, p.inNew
		added = append(added, m)
		res.Added++
	}
	renames = journal
	if testHookBeforeUidlistWrite != nil && len(renames) > 0 {
		testHookBeforeUidlistWrite()
	}

	// 5. Control files, then directories durable. Dovecot takes over a
	// uidlist lock it finds stale (not refreshed for two minutes: this
	// process was stopped, or its refresher failed); another writer may
	// then have changed the list since we read it, and our rewrite would
	// lose its records. The renames above are journaled, so the next sync
	// finishes this mailbox from the disk as it is (design §7.6).
	if err := lk.Check(); err != nil {
		return r.wrap(name, fmt.Errorf("not writing dovecot-uidlist: %w", err))
	}
	if len(kw) != kwBefore {
		if err := maildir.WriteKeywords(dir, kw); err != nil {
			return r.wrap(name, err)
		}
	}
	nu := *ul
	nu.Version = 3
	// In UID order: the UIDs are sorted, not the (large) records.
	uids := make([]uint32, 0, len(recs))
	for u := range recs {
		uids = append(uids, u)
	}
	slices.Sort(uids)
	withFile := len(uids)
	if listed && !rewriting {
		// Records without a file: the expunged messages' records that
		// Dovecot keeps until it recreates the uidlist, and this apply's
		// own (keptGone). Dovecot recreates the file, leaving them out,
		// when a sync finds at least a quarter of the records without
		// their files (maildir-uidlist.c, UIDLIST_COMPRESS_PERCENTAGE);
		// else it appends to it and they stay. This rewrite does the
		// same, except for the records of this apply's expunges and
		// renumberings: those stay until a later rewrite, for the reason
		// given at keptGone. A record the index still holds as a live
		// message (its file expunged or moved since the scan) stays for
		// the next scan.
		var fileless, older []uint32
		for _, u := range uids {
			if files[baseOf(recs[u].FileName)] == nil {
				fileless = append(fileless, u)
				if !keptGone[u] {
					older = append(older, u)
				}
			}
		}
		withFile -= len(fileless)
		if len(older) > 0 && len(fileless)*4 >= len(uids) {
			live, err := r.liveUIDs(box.GUID, older)
			if err != nil {
				return r.wrap(name, err)
			}
			for _, u := range older {
				if !live[u] {
					delete(recs, u)
				}
			}
			uids = uids[:0]
			for u := range recs {
				uids = append(uids, u)
			}
			slices.Sort(uids)
		}
	}
	nu.Records = make([]maildir.UidRecord, 0, len(uids))
	var maxUID uint32
	for _, u := range uids {
		nu.Records = append(nu.Records, recs[u])
		maxUID = max(maxUID, u)
	}
	nu.NextUID = max(diskNext, bp.UIDNext, maxUID+1)
	if adopt != nil {
		nu.GUID = [16]byte(adopt.To)
		nu.UIDValidity = adopt.UIDValidity
	}
	if tail != nil {
		if err := r.appendAdded(name, dir, tail, added, nu.NextUID); err != nil {
			return err
		}
	} else if !flagOnly || nu.NextUID != ul.NextUID {
		// Flag changes alone leave the uidlist as it is (its file names
		// may show stale flags, as Dovecot's do): no rewrite of a large
		// list.
		if light {
			// recs holds only the flagged records: never written.
			return r.errf(name, "internal error: uidlist rewrite after a header-only read")
		}
		if err := maildir.WriteUidlist(dir, &nu); err != nil {
			return r.wrap(name, err)
		}
		// A new UIDVALIDITY, or files at other UIDs under their old names
		// (a rewrite renames none), leaves cur/ and new/ as they were, and
		// a Dovecot whose index of the mailbox is settled would not read
		// the uidlist again: it would go on showing the old UIDVALIDITY
		// (stress seed 1795941362355669999) and messages at their old UIDs.
		if nu.UIDValidity != ul.UIDValidity || (rewriting && len(moved) > 0) {
			touched["cur"] = true
			if err := maildir.NudgeDovecot(dir); err != nil {
				return r.wrap(name, err)
			}
		}
	}
	for _, sub := range []string{"cur", "new"} {
		if !touched[sub] && !rewriting {
			continue // nothing of ours to make durable there
		}
		if err := maildir.SyncDir(filepath.Join(dir, sub)); err != nil {
			return r.wrap(name, err)
		}
	}

	if testHookBeforeBoxCommit != nil {
		testHookBeforeBoxCommit(dir)
	}
	if r.opt.BeforeBoxCommit != nil {
		r.opt.BeforeBoxCommit(dir, rewriting)
	}

	// A fresh UIDVALIDITY given in place (sync/merge's revalidate: same
	// GUID, no renumbering) keeps the UID space: a message whose file went
	// away since the scan (Dovecot expunged it), and which the rewrite
	// therefore left out, is recorded as expunged, as a scan would record
	// it (a merge's rewrite leaves it: the loser's UIDs are void).
	var goneInPlace []*model.Tombstone
	if adopt != nil && adopt.From == adopt.To && !bp.Reset && len(bp.Moves) == 0 {
		if goneInPlace, err = r.goneInPlace(dir, &nu, oldBy, expunged); err != nil {
			return r.wrap(name, err)
		}
	}

	// 6. The index.
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		if len(renames) > 0 {
			if err := clearRenumbers(tx, dir); err != nil {
				return err
			}
		}
		if len(bp.Adds) > 0 {
			if err := clearBornJournal(tx, bp.GUID); err != nil {
				return err
			}
		}
		if adopt != nil {
			if err := clearAdoptJournal(tx, adopt.To); err != nil {
				return err
			}
		}
		b, err := getBox(tx, box.GUID)
		if err != nil || b == nil {
			return fmt.Errorf("mailbox %s left the index: %v", box.GUID, err)
		}
		var born int64
		for _, m := range added {
			born = max(born, model.BornTime(m.Born))
		}
		r.store.observe(tx, born)
		if rewriting {
			// New identity or a full rewrite: rebuild the records from what
			// is now on disk.
			bt, err := openBoxTx(tx, b)
			if err != nil {
				return err
			}
			for _, t := range goneInPlace {
				t.T = r.store.stamp(tx, 0)
				if err := bt.drop(t.UID, t); err != nil {
					return err
				}
			}
			if err := bt.resetMessages(); err != nil {
				return err
			}
			if adopt != nil && adopt.From != adopt.To {
				// The loser's GUID stays as an alias of the winner, with its
				// expunge tombstones: a third replica that still holds it is
				// merged into the winner too, and what was expunged here
				// under it stays expunged.
				alias := *b
				alias.Deleted, alias.DeletedT, alias.Missing, alias.MergedInto = true, r.store.stamp(tx, b.NameT), false, adopt.To
				alias.Messages, alias.Held, alias.Keywords, alias.Stamp, alias.Dir = 0, 0, nil, Stamp{}, ""
				alias.Epoch = randomUint64()
				if err := putBox(tx, &alias); err != nil {
					return err
				}
				if nb, err := getBox(tx, adopt.To); err == nil && nb != nil {
					// The index knew the winner (missing here): its
					// tombstones stay.
					b.Mailbox.Modseq = max(b.Mailbox.Modseq, nb.Mailbox.Modseq)
				}
			}
			if adopt != nil {
				b.GUID, b.UIDValidity, b.Name, b.NameT = adopt.To, adopt.UIDValidity, adopt.Name, adopt.NameT
				b.Deleted, b.Missing = false, false
				b.Revived = r.lastDelete(b.GUID) // the GUID may have been deleted here before
			}
			b.Epoch = randomUint64()
			b.Stamp = Stamp{}
			bt, err = openBoxTx(tx, b)
			if err != nil {
				return err
			}
			flagsBy := map[uint32]model.Flags{}
			for _, f := range flagged {
				flagsBy[f.uid] = f.flags
			}
			addBy := map[uint32]*Msg{}
			for _, m := range added {
				addBy[m.UID] = m
			}
			movedTo := map[uint32]uint32{}
			for _, mv := range moved {
				movedTo[mv.To] = mv.From
			}
			complete := true // every record of the new uidlist is in the index
			for _, rec := range nu.Records {
				m := addBy[rec.UID]
				if m == nil {
					src := oldBy[rec.UID]
					if from, ok := movedTo[rec.UID]; ok {
						src = oldBy[from]
					}
					if src == nil {
						complete = false
						continue // the next scan picks it up
					}
					if src.fileBase() != baseOf(rec.FileName) {
						complete = false
						continue // another message's file: the next scan reads it
					}
					c := *src
					m = &c
					m.UID = rec.UID
				}
				if f, ok := flagsBy[rec.UID]; ok {
					m.Flags = f
				}
				m.File, m.Held = rec.FileName, false
				if err := bt.put(m); err != nil {
					return err
				}
			}
			b.UIDNext = nu.NextUID
			b.Messages = len(nu.Records)
			if clean && complete && len(oldBy) == 0 {
				// An empty mailbox (the index held no records of it: an
				// empty INBOX adopted by a first sync, say) that the index
				// was up to date with as we began, and every record we
				// wrote is in the index: the next scan need not read it
				// again (as below). Other rewrites leave it to the next
				// scan.
				at1 := stampClock()
				st1 := stampOf(dir).settled(at1).withNew(st0.settled(at0))
				st1.Racy |= box.Stamp.Racy // (as below)
				b.Stamp, b.Keywords = st1, kw
			}
			return putBox(tx, b)
		}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		for _, e := range expunged {
			if err := bt.drop(e.UID, &model.Tombstone{GUID: e.GUID, Born: e.Born, T: r.store.stamp(tx, 0)}); err != nil {
				return err
			}
		}
		for _, mv := range moved {
			m := oldBy[mv.From]
			if err := bt.drop(mv.From, &model.Tombstone{GUID: mv.GUID, MovedTo: mv.To, T: r.store.stamp(tx, 0)}); err != nil {
				return err
			}
			if m != nil {
				c := *m
				c.UID = mv.To
				c.File = recs[mv.To].FileName
				if nb, ok := newBase[mv.From]; ok {
					c.Base = nb
				}
				if err := bt.put(&c); err != nil {
					return err
				}
				oldBy[mv.To] = &c
			}
		}
		for _, f := range flagged {
			m := oldBy[f.uid]
			if m == nil {
				if mm, err := bt.get(f.uid); err == nil && mm != nil {
					m = mm
				} else {
					continue
				}
			}
			c := *m
			c.Flags = f.flags
			c.File = recs[f.uid].FileName
			c.New = files[baseOf(c.File)] != nil && files[baseOf(c.File)].inNew
			if err := bt.put(&c); err != nil {
				return err
			}
		}
		// Flag changes on held messages live in the index only.
		for _, fset := range bp.Flags {
			if m := oldBy[fset.UID]; m != nil && m.Held {
				c := *m
				if bp.Exact {
					c.Flags = fset.Flags
				} else {
					c.Flags = model.Merge(m.Flags, fset.Flags)
				}
				if err := bt.put(&c); err != nil {
					return err
				}
			}
		}
		refilled := false
		for _, m := range added {
			refilled = refilled || bt.lostAt(m.UID, m.GUID)
			if err := bt.put(m); err != nil {
				return err
			}
		}
		if err := r.learnBorns(tx, bt, bp.Borns); err != nil {
			return err
		}
		if refilled || staleState {
			// A message lost with the mailbox's directory is back. Other
			// peers' saved state may say that this replica and they agree
			// below their common UIDNEXT, and this UID was Lost here then
			// (while the peer may have nothing there): that state is stale.
			// So is a state under which a plan changed the flags of a
			// message this side does not have (staleState).
			b.Epoch = randomUint64()
		}
		b.UIDNext = max(b.UIDNext, nu.NextUID)
		switch {
		case tail != nil:
			b.Messages += len(added)
		case !light:
			b.Messages = withFile
		}
		b.Keywords = kw
		// Everything in cur/ and the control files changed under our lock;
		// new/ can change without it (deliveries). When the index was up to
		// date as we started, it takes the stamp of what we wrote, but with
		// new/'s time from before if new/ changed since (our own adds, or
		// a delivery): the next scan then lists the mailbox again, and with
		// the uidlist's stamp matching it needs no uidlist parse (scanKnown).
		// Else the next scan reads the mailbox in full.
		if at1 := stampClock(); clean {
			st1 := stampOf(dir).settled(at1).withNew(st0.settled(at0))
			// The racy marks of the stamp the apply was clean against
			// stay: raw mtimes cannot tell a change made in the tick of
			// that stamp, and cur/'s unchanged mtime, older than the
			// window by now, would vouch for it (TestChangeInTheTickOfAStampIsSeen/late-apply).
			st1.Racy |= box.Stamp.Racy
			b.Stamp = st1
		} else {
			b.Stamp.Uidlist = 0
		}
		if rederive {
			// The index holds a file name with flags other than the name
			// shows (see rederive): the next scan reads every name's flags
			// again, as after a change of dovecot-keywords.
			b.Stamp.Keywords = 0
		}
		return putBox(tx, b)
	})
	return r.wrap(name, err)
}

// bornsOnly reports whether a mailbox's plan only teaches Born stamps.
func bornsOnly(bp *merge.BoxPlan) bool {
	return len(bp.Borns) > 0 && !bp.Reset && !bp.BumpNext && bp.AddCount == 0 && len(bp.Adds)+len(bp.Moves)+len(bp.Flags)+len(bp.Expunges)+len(bp.Release) == 0
}

// appendAdded records the added messages in the mailbox's uidlist by an
// append (tail, opened under the dotlock the caller holds), or, when the
// file cannot take one (a page boundary, or a NEXTUID to raise above what
// the records give), by a rewrite of the whole list with them.
func (r *Replica) appendAdded(name, dir string, tail *maildir.UidlistAppend, added []*Msg, nextUID uint32) error {
	recs := make([]maildir.UidRecord, 0, len(added))
	for _, m := range added {
		rec := maildir.UidRecord{UID: m.UID, FileName: m.File}
		if m.fileBase() != m.GUID {
			rec.Set('G', m.GUID)
		}
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b maildir.UidRecord) int { return cmp.Compare(a.UID, b.UID) })
	next := tail.NextUID
	if len(recs) > 0 {
		next = max(next, recs[len(recs)-1].UID+1)
	}
	if next >= nextUID {
		_, err := tail.Append(recs)
		if err == nil {
			return nil
		}
		if !errors.Is(err, maildir.ErrNoAppend) {
			return r.wrap(name, err)
		}
	}
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		return r.wrap(name, err)
	}
	ul.Records = append(ul.Records, recs...)
	ul.NextUID = max(ul.NextUID, nextUID)
	ul.Version = 3
	if err := maildir.WriteUidlist(dir, ul); err != nil {
		return r.wrap(name, err)
	}
	return nil
}

func (r *Replica) nextSeq() uint64 {
	r.seq++
	return r.seq
}

// applyDelete removes a mailbox the plan deleted, unless new mail arrived
// in it since the scan.
func (r *Replica) applyDelete(ctx context.Context, op merge.MailboxOp, res *ApplyResult) error {
	b, err := r.getBox(op.GUID)
	if err != nil {
		return r.wrap(op.Name, err)
	}
	if b == nil || b.Deleted {
		return nil
	}
	if model.IsInbox(b.Name) {
		skip(res, "delete of INBOX refused")
		return nil
	}
	dir, err := r.locate(b)
	if err == nil {
		if testHookBeforeDeleteLock != nil {
			testHookBeforeDeleteLock(dir)
		}
		lk, err := r.lockUidlist(ctx, dir)
		if err != nil && dirGone(dir) {
			skip(res, "delete of %q: the directory went away during the sync", b.Name)
			return nil
		}
		if err != nil {
			return r.wrap(b.Name, err)
		}
		// The directory may hold another mailbox by now: a client deleted
		// this one and renamed another into its name since locate read
		// the uidlist (Dovecot's RENAME takes no uidlist lock). Under our
		// lock, look again.
		if ul, err := readUidlistHeader(dir); err != nil || model.MailboxGUID(ul.GUID) != b.GUID {
			lk.Unlock()
			skip(res, "delete of %q: the directory now holds another mailbox", b.Name)
			return nil
		}
		files, _, err := listFiles(dir)
		if err != nil {
			lk.Unlock()
			if dirGone(dir) {
				skip(res, "delete of %q: the directory went away during the sync", b.Name)
				return nil
			}
			return r.wrap(b.Name, err)
		}
		if len(files) > 0 {
			lk.Unlock()
			skip(res, "delete of %q: %d messages arrived since the scan", b.Name, len(files))
			return nil
		}
		if f := busyTmp(dir, r.opt.Now(), busyTmpAge); f != "" {
			// A client is saving a message into it (Dovecot writes to tmp/
			// before it takes the uidlist lock): removing the directory
			// would fail its APPEND.
			lk.Unlock()
			skip(res, "delete of %q: a message is being saved into it (%s)", b.Name, f)
			return nil
		}
		ll, err := r.lockIndexLog(ctx, dir)
		if errors.Is(err, errSaving) {
			lk.Unlock()
			skip(res, "delete of %q: %v", b.Name, err)
			return nil
		} else if err != nil {
			lk.Unlock()
			return r.wrap(b.Name, err)
		}
		nl, err := r.lockIndexLogCreation(ctx, dir)
		if errors.Is(err, errSaving) {
			ll.Unlock()
			lk.Unlock()
			skip(res, "delete of %q: %v", b.Name, err)
			return nil
		} else if err != nil {
			ll.Unlock()
			lk.Unlock()
			return r.wrap(b.Name, err)
		}
		if testHookBeforeDirMove != nil {
			testHookBeforeDirMove(dir)
		}
		// As Dovecot's DELETE: out of the listing first (renamed to a
		// hidden name, our locks moving with it), then removed.
		r.log.Debug("removing a mailbox directory", "dir", dir)
		err = r.loc.RemoveMailboxDir(dir, func(d string) {
			lk.Moved(d)
			if nl != nil {
				nl.Moved(d)
			}
		})
		unlockCreation(nl)
		ll.Unlock()
		if err != nil {
			lk.Unlock()
			if dirGone(dir) {
				skip(res, "delete of %q: the directory went away during the sync", b.Name)
				return nil
			}
			return r.wrap(b.Name, err)
		}
		_ = lk.Unlock() // (removed with the directory)
	}
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, op.GUID)
		if err != nil || b == nil {
			return err
		}
		_, err = r.markDeleted(tx, b, func() int64 { return op.DeletedT })
		return err
	})
	if err != nil {
		return r.wrap(op.Name, err)
	}
	res.MailboxOps++
	return nil
}

// busyTmpAge is how recent a file in a mailbox's tmp/ must be to count as
// a save in progress (Dovecot itself removes tmp/ files after 36 hours).
const busyTmpAge = time.Hour

// busyRenameAge is how recently a file in a mailbox's tmp/ must have been
// written for a rename of the mailbox to wait: a save in progress writes
// its file continuously; a file a failed save left behind holds the
// rename up only this long.
const busyRenameAge = 5 * time.Second

// errSaving is why a mailbox was not moved: a client saves into it, or a
// Dovecot process holds a lock file in it.
var errSaving = errors.New("a client is writing into it")

// dovecotLockIn returns the name of a lock file in dir written less than
// age ago (Dovecot's dotlocks, such as dovecot.index.log.newlock while it
// creates the folder's index log), other than the uidlist lock, or "".
// Moving the folder under such a lock makes Dovecot log "Our dotlock file
// ... was deleted", and the process can then keep the mailbox list's lock
// for minutes (seen in the IMAP stress).
func dovecotLockIn(dir string, now time.Time, age time.Duration) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		n := e.Name()
		if n == maildir.UidlistName+".lock" || !(strings.HasSuffix(n, ".lock") || strings.HasSuffix(n, ".newlock")) {
			continue
		}
		if fi, err := e.Info(); err == nil && now.Sub(fi.ModTime()) < age {
			return n
		}
	}
	return ""
}

// busyTmp returns the name of a file in dir/tmp written less than age ago
// that is not twinbox's own, or "".
func busyTmp(dir string, now time.Time, age time.Duration) string {
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "twinbox.") {
			continue // ours (a killed apply's; removed at the next open)
		}
		if fi, err := e.Info(); err == nil && now.Sub(fi.ModTime()) < age {
			return e.Name()
		}
	}
	return ""
}

// applySubs sets subscription registers and rewrites the subscriptions file.
func (r *Replica) applySubs(subs []model.Subscription) error {
	return r.store.db.Update(func(tx *bolt.Tx) error {
		for _, s := range subs {
			if err := putSub(tx, s); err != nil {
				return err
			}
		}
		all, err := loadSubs(tx)
		if err != nil {
			return err
		}
		var names []string
		for _, s := range all {
			if s.Subscribed {
				names = append(names, s.Name)
			}
		}
		sort.Strings(names)
		lk, err := maildir.LockSubscriptionsOrphans(context.Background(), r.loc.Root, r.opt.LockTimeout)
		if err != nil {
			return r.wrap("", fmt.Errorf("locking subscriptions: %w", err))
		}
		defer lk.Unlock()
		if err := r.loc.WriteSubscriptions(names); err != nil {
			return r.wrap("", fmt.Errorf("writing subscriptions: %w", err))
		}
		return tx.Bucket(bMeta).Put([]byte("subs_stamp"), []byte(fmt.Sprint(mtimeNS(filepath.Join(r.loc.Root, "subscriptions")))))
	})
}

// oldByUID reads the index records of the flagged UIDs.
func oldByUID(r *Replica, g model.MailboxGUID, flags []merge.FlagSet) map[uint32]*Msg {
	out := map[uint32]*Msg{}
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		bb, err := buckets(tx, g, false)
		if err != nil || bb == nil {
			return err
		}
		for _, f := range flags {
			if v := bb.uid.Get(u32(f.UID)); v != nil {
				if m, err := decodeMsg(v); err == nil {
					out[f.UID] = m
				}
			}
		}
		return nil
	})
	return out
}

// knownFiles finds the files of flagged messages by their recorded names;
// nil when any is not where the index says (the caller lists the mailbox).
func knownFiles(dir string, flags []merge.FlagSet, recs map[uint32]*Msg) map[string]*diskFile {
	files := map[string]*diskFile{}
	for _, f := range flags {
		m := recs[f.UID]
		if m == nil || m.Held {
			continue
		}
		if m.File == "" {
			return nil
		}
		if _, err := os.Lstat(filepath.Join(dir, subdir(m.New), m.File)); err != nil {
			return nil
		}
		fn, err := maildir.ParseFileName(m.File)
		if err != nil {
			return nil
		}
		files[fn.Base] = &diskFile{name: m.File, inNew: m.New, fn: fn}
	}
	return files
}

// moveLate gives new UIDs to the records of an adopting mailbox that the
// index never saw (Dovecot saved their messages since the scan), before
// the list is rewritten under another UIDVALIDITY (a merge's winner, or a
// fresh value): their UIDs were given under the old identity, and under
// the new one the other side may have given them to other messages
// (contract §3.1). They move to UIDs at or above next (the plan's UIDNEXT,
// above every UID either side gave under the new identity) and above
// every other record, in their old order, as messages arriving after the
// sync would get; the next sync sends them. The sync reports a change
// ("run again").
func moveLate(res *ApplyResult, name string, recs map[uint32]maildir.UidRecord, byBase map[string]string, oldBy map[uint32]*Msg, next uint32) {
	var late []uint32
	for u, rec := range recs {
		if _, known := byBase[baseOf(rec.FileName)]; !known && oldBy[u] == nil {
			late = append(late, u)
		} else {
			next = max(next, u+1)
		}
	}
	if len(late) == 0 {
		return
	}
	slices.Sort(late)
	for _, u := range late {
		rec := recs[u]
		delete(recs, u)
		rec.UID = next
		recs[next] = rec
		next++
	}
	skip(res, "mailbox %q: %d messages saved since the scan (at UID %d and up) move above the plan's UIDs under the mailbox's new identity", name, len(late), late[0])
}

// goneInPlace returns the expunge tombstones an in-place rewrite under a
// fresh UIDVALIDITY must record: the index's messages that the new uidlist
// nu does not list because their files went away since the scan, other
// than the plan's expunges (read again here: a listing can miss a file
// that Dovecot moves from new/ to cur/ meanwhile, and a file that is there
// is never taken for an expunge).
func (r *Replica) goneInPlace(dir string, nu *maildir.Uidlist, oldBy map[uint32]*Msg, expunged []merge.Expunge) ([]*model.Tombstone, error) {
	planned := map[uint32]bool{}
	for _, e := range expunged {
		planned[e.UID] = true
	}
	listed := make(map[string]bool, len(nu.Records))
	for _, rec := range nu.Records {
		listed[baseOf(rec.FileName)] = true
	}
	var cand []*Msg
	for _, m := range oldBy {
		if !m.Held && !planned[m.UID] && !listed[m.fileBase()] {
			cand = append(cand, m)
		}
	}
	if len(cand) == 0 {
		return nil, nil
	}
	files, _, err := listFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []*model.Tombstone
	for _, m := range cand {
		if files[m.fileBase()] == nil {
			out = append(out, &model.Tombstone{UID: m.UID, GUID: m.GUID})
		}
	}
	return out, nil
}
