package index

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// TmpPrefix starts the names of the temporary directories twinbox renames
// mailboxes through; a scan never takes such a name for a rename.
const TmpPrefix = maildir.HiddenPrefix

// ScanResult reports what a scan found.
type ScanResult struct {
	Changed bool               // the index changed
	Held    []replica.HeldInfo // mailboxes with expunges held back
	// boxes are every mailbox record as the scan left them (read after its
	// last write): Begin describes the replica with them instead of
	// decoding them all again.
	boxes []*Box
}

// diskFile is a message file found in cur/ or new/.
type diskFile struct {
	name  string
	inNew bool
	fn    maildir.FileName
	// lazy: fn is not parsed yet (listSubs with lazy set); parse() does it.
	lazy bool
	// matched: an index record names this file (scanKnown's own mark: a
	// map keyed by the file cost more than the rest of the comparison).
	matched bool
}

// parse parses the name of a lazily listed file and reports whether it is
// a Maildir name.
func (f *diskFile) parse() bool {
	if !f.lazy {
		return true
	}
	fn, err := maildir.ParseFileName(f.name)
	if err != nil {
		return false
	}
	f.fn, f.lazy = fn, false
	return true
}

func stampOf(dir string) Stamp {
	st, _ := stampLock(dir, false)
	return st
}

// stampLock is stampOf that also reports, when asked (lock), whether a
// dovecot-uidlist.lock is there: the scan looks for one a killed twinbox
// left in every mailbox, and a stat relative to the open directory is
// cheaper than one more full path walk.
func stampLock(dir string, lock bool) (Stamp, bool) {
	return stampAt(-1, "", dir, lock)
}

// stampAt is stampLock with the directory named by rel, relative to the
// open directory rootFD (the mail root, which the scan opens once), when
// rootFD is not -1 and rel a local path: a no-change sync stats every
// mailbox on both sides, and a path walk from / or an open and close of
// each mailbox's directory cost more than the stats. Else dir is opened.
func stampAt(rootFD int, rel, dir string, lock bool) (Stamp, bool) {
	fd, prefix := rootFD, ""
	switch {
	case rootFD != -1 && rel == "":
	case rootFD != -1 && filepath.IsLocal(rel):
		prefix = rel + "/"
	default:
		// Relative to the directory, opened once.
		var err error
		if fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return Stamp{Cur: -1, New: -1, Uidlist: -1, Keywords: -1}, lock
		}
		defer unix.Close(fd)
	}
	var st Stamp
	var s unix.Stat_t
	mt := func(name string) int64 {
		if unix.Fstatat(fd, prefix+name, &s, 0) != nil {
			return -1
		}
		return s.Mtim.Nano()
	}
	st.Cur = mt("cur")
	st.New = mt("new")
	if st.Uidlist = mt(maildir.UidlistName); st.Uidlist != -1 {
		st.UidlistSize = s.Size
		st.UidlistIno = int64(s.Ino)
	}
	st.Keywords = mt("dovecot-keywords")
	if c := testHookFrozenFileClock; c != 0 {
		for _, p := range []*int64{&st.Cur, &st.New, &st.Uidlist, &st.Keywords} {
			if *p != -1 {
				*p = c
			}
		}
	}
	locked := false
	if lock {
		locked = unix.Fstatat(fd, prefix+maildir.UidlistName+".lock", &s, unix.AT_SYMLINK_NOFOLLOW) == nil
	}
	if fd == rootFD && st.Cur == -1 && st.New == -1 && st.Uidlist == -1 && st.Keywords == -1 {
		// Nothing there, or no directory (which the open reports as
		// locked when asked): the open decides, as without rootFD.
		return stampAt(-1, "", dir, lock)
	}
	return st, locked
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
//
// A folder that a client deletes or renames while the scan reads it can
// make it fail on a file that is gone: the scan then runs again (a few
// times at most), and reports a change.
func (r *Replica) Scan(ctx context.Context) (*ScanResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := r.scan(ctx)
		if err == nil && attempt > 1 {
			res.Changed = true
		}
		if err == nil || attempt == 3 || ctx.Err() != nil || !errors.Is(err, fs.ErrNotExist) {
			return res, err
		}
		r.log.Info("a file went away during the scan; scanning again", "error", err)
	}
}

func (r *Replica) scan(ctx context.Context) (*ScanResult, error) {
	res := &ScanResult{}
	r.scanAt = stampClock() // before every stamp this scan takes
	if !r.opt.DryRun && maildir.BreakOrphanSubscriptionsLock(r.loc.Root) {
		// A killed twinbox's lock would make Dovecot's SUBSCRIBE,
		// UNSUBSCRIBE and DELETE (and this sync) wait 30 s.
		r.log.Info("removed a dotlock left by a killed twinbox", "file", maildir.SubscriptionsName)
	}
	if !r.opt.DryRun {
		if _, err := r.loc.MakeMailbox(r.loc.Root, nil); err != nil {
			return nil, r.wrap("INBOX", err)
		}
	}
	var dirs []maildir.MailboxDir
	var err error
	if _, serr := os.Stat(r.loc.Root); serr == nil || !r.opt.DryRun {
		if dirs, err = r.listDirs(); err != nil {
			return nil, r.wrap("", fmt.Errorf("listing mailboxes: %w", err))
		}
	}
	boxes, err := r.loadBoxes()
	if err != nil {
		return nil, r.wrap("", err)
	}
	byGUID := map[model.MailboxGUID]*Box{}
	byDir := map[string]*Box{}
	for _, b := range boxes {
		// What the scan compares with the disk: racy mtimes trust nothing.
		b.Stamp = b.Stamp.trusted()
		byGUID[b.GUID] = b
		if !b.Deleted && !b.Missing {
			byDir[b.Dir] = b
		}
	}

	if !r.opt.DryRun && r.bringBack(ctx, dirs, byGUID) && r.loc.Layout == maildir.LayoutFS {
		// Child folders came back inside a parent: listed anew at
		// their places (they were listed inside the hidden directory).
		if dirs, err = r.listDirs(); err != nil {
			return nil, r.wrap("", fmt.Errorf("listing mailboxes: %w", err))
		}
	}
	// Adopts a killed apply may have carried out on disk without
	// recording them (adopt.go).
	adopts, err := r.adoptJournals()
	if err != nil {
		return nil, r.wrap("", err)
	}
	found := map[model.MailboxGUID]bool{}
	// unsure: mailboxes whose directory went away while this scan read it
	// (a client's RENAME, maybe back again, or a DELETE under way): where
	// they went is for the next scan to see.
	unsure := map[model.MailboxGUID]bool{}
	complete := true // every directory read (for an unborn index)
	// The root, opened once: each mailbox's stamp is taken relative to it.
	rootFD := -1
	if len(dirs) > 0 {
		if fd, err := unix.Open(r.loc.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			rootFD = fd
			defer unix.Close(fd)
		}
	}
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
		changed, err := r.scanDir(ctx, rootFD, d.Name, d.Dir, rel, byGUID, byDir, found, adopts, res)
		if err != nil {
			if dirGone(d.Dir) {
				// Deleted or renamed (by Dovecot) while we read it: the
				// next scan sees what became of it.
				r.log.Info("mailbox vanished during the scan", "mailbox", d.Name, "error", err)
				if b := byDir[rel]; b != nil {
					unsure[b.GUID] = true
				}
				res.Changed = true
				complete = false
				continue
			}
			return nil, err
		}
		res.Changed = res.Changed || changed
	}

	// Mailboxes the index knows that no directory holds any more.
	var logRecs []maildir.LogRecord
	logRead := false
	rechecked := false                        // looked again once for mailboxes not found
	seenAgain := map[model.MailboxGUID]bool{} // the GUIDs that second look found
	for _, b := range boxes {
		if found[b.GUID] || b.Deleted || b.Missing {
			continue
		}
		if unsure[b.GUID] {
			// Not vanished, not deleted: not known. Taken for vanished
			// (Missing), the sync restored it from the peer, into the
			// directory when it came back (a client's RENAME away and
			// back): a message a client expunged meanwhile came back,
			// at its old UID (Dovecot: "Expunged message reappeared"),
			// or under a new UIDVALIDITY (the expunge lost).
			continue
		}
		if !logRead {
			logRecs, err = maildir.ReadMailboxLog(r.loc.Root)
			if err != nil {
				r.log.Warn("reading dovecot.mailbox.log", "err", err)
			}
			logRead = true
		}
		delT := deleteTime(logRecs, b)
		if delT.IsZero() && adoptOf(adopts, b, byGUID, found) == nil {
			// No directory holds it and no DELETE is logged: before the
			// verdict "vanished" (Missing: restored from the peer), look
			// again a moment later. A client's DELETE removes the
			// directory first and logs the delete after it, and a listing
			// can miss a directory a client renames while it reads (on
			// neither name): taken for vanished, the sync restored the
			// mailbox the user had just deleted, or into a folder a client
			// made or renamed to its name meanwhile (the IMAP stress on
			// 2.4, session 10, long seed 1795949568032157517: "Expunged
			// message reappeared" on A's S2).
			if !rechecked {
				rechecked = true
				if testHookBeforeMissingRecheck != nil {
					testHookBeforeMissingRecheck(b.Name)
				}
				time.Sleep(missingRecheck)
				if recs, err := maildir.ReadMailboxLog(r.loc.Root); err == nil {
					logRecs = recs
				}
				// One listing for all the mailboxes not found (a wiped
				// root misses them all).
				if dirs, err := r.listDirs(); err == nil {
					for _, d := range dirs {
						if h, err := readUidlistHeader(d.Dir); err == nil {
							seenAgain[model.MailboxGUID(h.GUID)] = true
						}
					}
				}
			}
			delT = deleteTime(logRecs, b)
			if delT.IsZero() {
				if seenAgain[b.GUID] {
					r.log.Info("mailbox not found by the listing, found again: the next scan sees where", "mailbox", b.Name)
					res.Changed = true
					complete = false
					continue
				}
			}
		}
		if j := adoptOf(adopts, b, byGUID, found); j != nil && (delT.IsZero() || j.From == j.To) {
			// The loser of a merge a killed apply did not record, its
			// directory gone since (adopt.go). (Deleted by a client
			// under the loser's GUID: the rewrite never happened.)
			if err := r.vanishedAdopt(b, j, logRecs); err != nil {
				return nil, r.wrap(b.Name, err)
			}
			delete(adopts, j.To)
			res.Changed = true
			continue
		}
		if err := r.vanished(b, delT); err != nil {
			return nil, err
		}
		res.Changed = true
	}

	if len(adopts) > 0 && complete {
		// Every directory was read: an entry no directory took is of an
		// adopt that never rewrote its uidlist (killed before).
		if err := r.store.db.Update(clearAdoptJournals); err != nil {
			return nil, r.wrap("", err)
		}
	}

	ch, err := r.scanSubs()
	if err != nil {
		return nil, err
	}
	res.Changed = res.Changed || ch
	if r.store.unborn && complete {
		// Every mailbox the new index found is in it now: what appears
		// from here on was born after this scan.
		if err := r.store.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Delete(metaUnborn) }); err != nil {
			return nil, r.wrap("", err)
		}
		r.store.unborn = false
	}

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
		res.boxes = all
		return nil
	}); err != nil {
		return nil, r.wrap("", err)
	}
	return res, nil
}

// deleteTime returns the time of the latest DELETE record for b in this
// life of the mailbox (zero if none): a record after b's life mark
// (Box.Revived, lifeMark).
func deleteTime(logRecs []maildir.LogRecord, b *Box) time.Time {
	var delT time.Time
	markSec, markN := b.Revived-b.Revived%int64(time.Second), b.Revived%int64(time.Second)
	atMark := int64(0)
	for _, lr := range logRecs {
		if lr.Type != maildir.LogDeleteMailbox || lr.GUID != [16]byte(b.GUID) {
			continue
		}
		sec := lr.Time.Unix() * int64(time.Second)
		switch {
		case sec < markSec:
			continue // an earlier life's
		case sec == markSec && b.Revived != 0:
			// Of that second, the first markN records were there when
			// the mailbox was last found alive; a mark of a whole second
			// (markN 0, written before session 9) covers them all.
			if atMark++; markN == 0 || atMark <= markN {
				continue
			}
		}
		if lr.Time.After(delT) {
			delT = lr.Time
		}
	}
	return delT
}

// lifeMark returns what Box.Revived records of the DELETE records for g
// in logRecs: 0 if none, else the time (Unix ns) of the latest one's
// second plus the number of records of that second (log times are whole
// seconds: a DELETE in the same second as the one before the mailbox came
// back is told apart by the count). Records only ever come after those
// counted (a rotation drops only older ones, which lowers the count seen
// later and so errs towards "of an earlier life": a delete read as a
// vanish, restored from the peer; nothing is lost).
func lifeMark(logRecs []maildir.LogRecord, g model.MailboxGUID) int64 {
	var t, n int64
	for _, lr := range logRecs {
		if lr.Type != maildir.LogDeleteMailbox || lr.GUID != [16]byte(g) {
			continue
		}
		switch sec := lr.Time.Unix() * int64(time.Second); {
		case sec > t:
			t, n = sec, 1
		case sec == t:
			n++
		}
	}
	if t <= 0 {
		return 0
	}
	return t + min(n, int64(time.Second)-1)
}

// vanished handles a mailbox whose directory is gone: a recorded delete
// (Dovecot's log) makes it deleted, anything else makes it missing.
func (r *Replica) vanished(b *Box, delT time.Time) error {
	return r.store.db.Update(func(tx *bolt.Tx) error {
		if j := bornJournal(tx, b.GUID); j != nil {
			// The uidlist of an apply killed before its index commit may
			// have given out UIDs up to there (born.go): they stay used,
			// also if the mailbox comes back (same GUID and UIDVALIDITY).
			b.UIDNext = max(b.UIDNext, j.next)
			if err := clearBornJournal(tx, b.GUID); err != nil {
				return err
			}
		}
		if !delT.IsZero() && !model.IsInbox(b.Name) {
			if _, err := r.markDeleted(tx, b, func() int64 { return r.store.stamp(tx, delT.UnixNano()) }); err != nil {
				return err
			}
			r.log.Info("mailbox deleted", "mailbox", b.Name, "guid", b.GUID.String())
			return nil
		}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
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
		return putBox(tx, b)
	})
}

// scanDir identifies the mailbox in one directory and scans its contents.
func (r *Replica) scanDir(ctx context.Context, rootFD int, name, dir, rel string, byGUID map[model.MailboxGUID]*Box, byDir map[string]*Box, found map[model.MailboxGUID]bool, adopts map[model.MailboxGUID]*adoptEntry, res *ScanResult) (bool, error) {
	st, locked := stampAt(rootFD, rel, dir, !r.opt.DryRun)
	if locked && maildir.BreakOrphanUidlistLock(dir) {
		// A killed twinbox's lock would make Dovecot wait for 120 s.
		r.log.Info("removed a dotlock left by a killed twinbox", "mailbox", name)
	}
	if b := byDir[rel]; b != nil && st.Uidlist != -1 && st.Uidlist == b.Stamp.Uidlist && st.UidlistSize == b.Stamp.UidlistSize && st.UidlistIno == b.Stamp.UidlistIno &&
		b.Name == name && !found[b.GUID] && !r.opt.AllowMassExpunge {
		if b.Stamp == st {
			found[b.GUID] = true
			return false, nil // nothing changed
		}
		if handled, changed, err := r.scanKnown(ctx, b, name, dir, st); err != nil || handled {
			if handled {
				found[b.GUID] = true
			}
			return changed, err
		}
	}
	var box *Box
	given := 0 // records establishUidlist added (UIDs given by this scan)
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, r.wrap(name, err)
	}
	if ul == nil || ul.GUID == [16]byte{} || found[model.MailboxGUID(ul.GUID)] {
		// No uidlist, one without a GUID, or a copy of another mailbox's:
		// give this directory its identity (restoring the index's when the
		// index knows this directory).
		var post *Stamp
		ul, post, given, err = r.establishUidlist(ctx, name, dir, byDir[rel], ul, found)
		if err != nil {
			return false, err
		}
		if post != nil {
			// (as after assignUIDs in scanContents)
			st.Uidlist, st.UidlistSize, st.UidlistIno = post.Uidlist, post.UidlistSize, post.UidlistIno
		}
	}
	g := model.MailboxGUID(ul.GUID)
	changed := false
	if j := adopts[g]; j != nil && r.adoptDone(j, ul, rel, byGUID, found) {
		// A merge that a killed apply wrote to the uidlist and did not
		// record: recorded now, as the apply would have.
		nb, err := r.completeAdopt(j, ul, rel, byGUID[j.From])
		if err != nil {
			return false, r.wrap(name, err)
		}
		delete(adopts, g)
		byGUID[g] = nb
		changed = true
	}
	found[g] = true
	box = byGUID[g]
	// A mailbox a new index finds: its listed messages were born before,
	// when is unknown (born.go).
	unborn := r.store.unborn && box == nil
	if box == nil {
		box = &Box{Mailbox: model.Mailbox{GUID: g, Name: name, UIDValidity: ul.UIDValidity, Epoch: randomUint64()}, Dir: rel}
		box.Revived = r.lastDelete(g) // alive now, whatever the log says of before
		byGUID[g] = box
		changed = true
	}
	changed, err = r.scanContents(ctx, box, name, dir, rel, ul, len(ul.Records)-given, st, changed, unborn, res)
	// A full scan reads every record of the mailbox, changed or not.
	r.store.touched(box.Messages)
	return changed, err
}

// establishUidlist writes a dovecot-uidlist for a directory that has none
// usable: the index's identity if the index knows the directory, else a new
// one, the way Dovecot would make it. For a new identity it also returns
// the stamp of the written file (taken under the lock), and how many
// records it added at the end (the files' new UIDs).
func (r *Replica) establishUidlist(ctx context.Context, name, dir string, known *Box, old *maildir.Uidlist, found map[model.MailboxGUID]bool) (*maildir.Uidlist, *Stamp, int, error) {
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		return nil, nil, 0, r.wrap(name, err)
	}
	defer lk.Unlock()
	// Re-read under the lock: Dovecot may have just written one.
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, 0, r.wrap(name, err)
	}
	if ul != nil && ul.GUID != [16]byte{} && !found[model.MailboxGUID(ul.GUID)] {
		return ul, nil, 0, nil
	}
	if ul == nil && known != nil && !found[known.GUID] && !known.Deleted && !known.Missing && r.deletedInLog(known) {
		known = nil // deleted with intent, then made anew: a new mailbox
	}
	if ul == nil && known != nil && !found[known.GUID] && r.adoptPendingFrom(known.GUID) {
		known = nil // perhaps rewritten by a killed adopt, then lost (adopt.go)
	}
	if ul == nil && known != nil && !found[known.GUID] && r.heldElsewhere(known.GUID, dir) {
		// Renamed away (its uidlist lives in another directory, which
		// this scan reaches later), and a new folder made at its name:
		// a new mailbox. Restoring the known one here would take the
		// GUID from the renamed folder and treat the mail expunged in it
		// since the last scan as lost (refilled from the peer).
		known = nil
	}
	if ul == nil && known != nil && !found[known.GUID] {
		// Restore from the index: same GUID and UIDs, under a new
		// UIDVALIDITY. Dovecot may have given UIDs here after the last
		// scan that no index saw (a message saved and expunged, or one
		// whose file went with the uidlist; a folder deleted and made
		// again within one second of its last DELETE, which the log's
		// whole seconds hide), and under the old value a later message
		// could take one (contract §3.1). Dovecot too gives a folder
		// whose uidlist it lost a new value. The index's records move to
		// the new value with their UIDs (no client knows any under it);
		// the peer takes the higher value in place (sync/merge).
		nu := &maildir.Uidlist{Version: 3, UIDValidity: known.UIDValidity, NextUID: max(known.UIDNext, 1), GUID: [16]byte(known.GUID)}
		if !r.opt.DryRun {
			// The counter may never have passed it (an index older than
			// the counter's upkeep): Dovecot must not hand it out again.
			if err := r.loc.RaiseUIDValidity(known.UIDValidity); err != nil {
				r.log.Warn("UIDVALIDITY counter", "mailbox", name, "err", err)
			}
			v, err := r.loc.NextUIDValidity(r.opt.Now())
			if err != nil {
				r.log.Warn("UIDVALIDITY counter", "mailbox", name, "err", err)
			}
			if v > known.UIDValidity {
				nu.UIDValidity = v
			}
		}
		var msgs []*Msg
		if err := r.store.db.View(func(tx *bolt.Tx) error {
			if j := bornJournal(tx, known.GUID); j != nil {
				// Adds of an apply killed before its index commit: its
				// uidlist may have given out their UIDs (born.go).
				nu.NextUID = max(nu.NextUID, j.next)
			}
			msgs, err = loadMsgs(tx, known.GUID)
			return err
		}); err != nil {
			return nil, nil, 0, r.wrap(name, err)
		}
		files, _, err := listFiles(dir)
		if err != nil {
			return nil, nil, 0, r.wrap(name, err)
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
		if len(lost) > 0 || nu.UIDValidity != known.UIDValidity {
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
				known.UIDValidity = nu.UIDValidity // records kept: scanContents resets none
				known.Epoch = randomUint64()       // the peer's records are needed in full
				return putBox(tx, known)
			}); err != nil {
				return nil, nil, 0, r.wrap(name, err)
			}
		}
		if err := r.writeUidlist(dir, nu); err != nil {
			return nil, nil, 0, r.wrap(name, err)
		}
		if err := r.nudgeDovecot(dir); err != nil {
			return nil, nil, 0, r.wrap(name, err)
		}
		r.log.Warn("dovecot-uidlist was missing: restored from the index under a new UIDVALIDITY", "mailbox", name, "uidvalidity", nu.UIDValidity, "missing_messages", len(lost))
		return nu, nil, 0, nil
	}
	if ul == nil {
		ul = &maildir.Uidlist{Version: 3, NextUID: 1}
	}
	ul.Version = 3
	ul.GUID = maildir.NewGUID()
	if found[model.MailboxGUID(ul.GUID)] {
		ul.GUID = maildir.NewGUID()
	}
	if r.opt.DryRun {
		cur, _ := r.loc.UIDValidityCounter()
		ul.UIDValidity = max(uint32(r.opt.Now().Unix()), cur+1)
		return ul, nil, 0, nil
	}
	// From the root's counter, as Dovecot takes one: a value Dovecot gave
	// (or gives next) to another mailbox of this root, perhaps one of the
	// same name deleted since, would let a client's cached UIDs of that
	// one name other messages (contract §3.1).
	ul.UIDValidity, err = r.loc.NextUIDValidity(r.opt.Now())
	if err != nil {
		r.log.Warn("UIDVALIDITY counter", "mailbox", name, "err", err)
	}
	// The files get their UIDs in the same write, under the same lock
	// (assignUIDs, which would write the uidlist a second time, then finds
	// nothing to do): a new mailbox's uidlist is written once.
	files, _, err := listFiles(dir)
	if err != nil {
		return nil, nil, 0, r.wrap(name, err)
	}
	given := r.giveUIDs(name, ul, files)
	if err := r.writeUidlist(dir, ul); err != nil {
		return nil, nil, 0, r.wrap(name, err)
	}
	if err := r.nudgeDovecot(dir); err != nil {
		return nil, nil, 0, r.wrap(name, err)
	}
	post := stampOf(dir) // under the lock: the file just written
	return ul, &post, given, nil
}

// lastDelete returns the life mark (lifeMark) of g's DELETE records in
// dovecot.mailbox.log now: what Box.Revived takes when the mailbox is
// found alive.
func (r *Replica) lastDelete(g model.MailboxGUID) int64 {
	recs, err := maildir.ReadMailboxLog(r.loc.Root)
	if err != nil {
		r.log.Warn("reading dovecot.mailbox.log", "err", err)
	}
	return lifeMark(recs, g)
}

// heldElsewhere reports whether a mailbox directory other than dir has a
// uidlist naming mailbox g.
func (r *Replica) heldElsewhere(g model.MailboxGUID, dir string) bool {
	dirs, err := r.listDirs()
	if err != nil {
		return false
	}
	for _, d := range dirs {
		if filepath.Clean(d.Dir) == filepath.Clean(dir) {
			continue
		}
		if ul, err := readUidlistHeader(d.Dir); err == nil && model.MailboxGUID(ul.GUID) == g {
			return true
		}
	}
	return false
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

func baseOf(file string) string {
	if i := strings.IndexByte(file, ':'); i >= 0 {
		return file[:i]
	}
	return file
}

// missedFile reports whether a record of ul without a file in files may
// name a file that the listing missed (see scanContents): a record at or
// above the UIDNEXT the index knows (saved since the last scan), one that
// the index holds as a live message, or one whose UID the index has never
// seen (neither a record nor a tombstone: Dovecot gave it out between a
// scan and an apply that then took the UIDNEXT above it). A record
// without a file whose UID the index retired is an expunged message's
// record, which Dovecot keeps until it rewrites the uidlist (and twinbox's
// apply too, see applyBox): it stands for no message, and costs no second
// listing.
func (r *Replica) missedFile(box *Box, ul *maildir.Uidlist, files map[string]*diskFile) (bool, error) {
	var gone []uint32
	for _, rec := range ul.Records {
		if files[baseOf(rec.FileName)] != nil {
			continue
		}
		if rec.UID >= box.UIDNext || ul.UIDValidity != box.UIDValidity {
			return true, nil
		}
		gone = append(gone, rec.UID)
	}
	if len(gone) == 0 {
		return false, nil
	}
	live, unknown, err := r.liveOrUnknownUIDs(box.GUID, gone)
	return len(live)+len(unknown) > 0, err
}

// liveOrUnknownUIDs sorts those of uids that the index holds as a message
// of mailbox g that is not held back (live) from those it has neither a
// record nor a tombstone of (unknown).
func (r *Replica) liveOrUnknownUIDs(g model.MailboxGUID, uids []uint32) (live, unknown map[uint32]bool, err error) {
	live, unknown = map[uint32]bool{}, map[uint32]bool{}
	err = r.store.db.View(func(tx *bolt.Tx) error {
		bb, err := buckets(tx, g, false)
		if err != nil {
			return err
		}
		for _, u := range uids {
			var v []byte
			if bb != nil {
				v = bb.uid.Get(u32(u))
			}
			if v == nil {
				if bb == nil || bb.tomb.Get(u32(u)) == nil {
					unknown[u] = true
				}
				continue
			}
			m, err := decodeMsg(v)
			if err != nil {
				return fmt.Errorf("UID %d: %w", u, err)
			}
			if !m.Held {
				live[u] = true
			}
		}
		return nil
	})
	return live, unknown, err
}

// liveUIDs returns those of uids at which the index holds a message of
// mailbox g that is not held back (a held message's file is gone on
// purpose).
func (r *Replica) liveUIDs(g model.MailboxGUID, uids []uint32) (map[uint32]bool, error) {
	live, _, err := r.liveOrUnknownUIDs(g, uids)
	return live, err
}

// listFiles reads cur/ and new/.
func listFiles(dir string) (map[string]*diskFile, []string, error) {
	return listSubs(dir, true, true, false)
}

// listSubs reads cur/ (if cur) and new/ (if nw): message files by base
// name, and the names that are not Maildir names.
//
// With lazy, the names in cur/ are not parsed: they are keyed by the part
// before ":" (which is the parsed base of a Maildir name) and marked lazy,
// and the caller parses (diskFile.parse) those it uses and drops those
// that are not Maildir names. Two names with one base are parsed here, so
// that the map holds what it would without lazy. (A flag change in a 10k
// cur/ otherwise parsed 10k names to use one.)
func listSubs(dir string, cur, nw, lazy bool) (map[string]*diskFile, []string, error) {
	var files map[string]*diskFile
	var bad []string
	for _, sub := range []string{"cur", "new"} {
		if (sub == "cur" && !cur) || (sub == "new" && !nw) {
			continue
		}
		if sub == "new" && testHookBetweenListings != nil {
			testHookBetweenListings(dir)
		}
		names, err := readNames(filepath.Join(dir, sub))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, nil, err
		}
		if testHookListing != nil {
			names = testHookListing(dir, sub, names)
		}
		if files == nil {
			files = make(map[string]*diskFile, len(names))
		}
		// One allocation for the directory's entries (never grown past
		// its capacity, so the pointers into it stay valid).
		slab := make([]diskFile, 0, len(names))
		alloc := func(f diskFile) *diskFile {
			slab = append(slab, f)
			return &slab[len(slab)-1]
		}
		for _, name := range names {
			if lazy && sub == "cur" {
				base := baseOf(name)
				old, ok := files[base]
				if !ok {
					files[base] = alloc(diskFile{name: name, lazy: true})
					continue
				}
				// Two names with one base: decide as below, parsed.
				if !old.parse() {
					bad = append(bad, subdir(old.inNew)+"/"+old.name)
					delete(files, base)
				}
			}
			fn, err := maildir.ParseFileName(name)
			if err != nil {
				bad = append(bad, sub+"/"+name)
				continue
			}
			if old, ok := files[fn.Base]; ok && !old.inNew {
				if !old.parse() {
					// A lazily listed name that is no Maildir name under
					// this base: it was never there.
					bad = append(bad, subdir(old.inNew)+"/"+old.name)
				} else {
					continue // the cur/ copy wins over new/ (Dovecot mid-move)
				}
			}
			files[fn.Base] = alloc(diskFile{name: name, inNew: sub == "new", fn: fn})
		}
	}
	if files == nil {
		files = map[string]*diskFile{}
	}
	return files, bad, nil
}

// readNames returns the names of the regular files (and entries of unknown
// type) in a directory, unsorted: a large cur/ is read with a few getdents
// calls and one string per entry.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The names are gathered in one buffer and cut from one string made
	// of it at the end: one allocation, not one per entry.
	var arena []byte
	var ends []int
	buf := make([]byte, 64<<10)
	fd := int(f.Fd())
	for {
		n, err := syscall.ReadDirent(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if n <= 0 {
			all := string(arena)
			names := make([]string, len(ends))
			start := 0
			for i, e := range ends {
				names[i] = all[start:e]
				start = e
			}
			return names, nil
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			if len(b) < 19 {
				break
			}
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, fmt.Errorf("reading directory %s: malformed entry", dir)
			}
			typ := b[18]
			nb := b[19:reclen]
			if i := bytes.IndexByte(nb, 0); i >= 0 {
				nb = nb[:i]
			}
			b = b[reclen:]
			if len(nb) == 0 || (nb[0] == '.' && (len(nb) == 1 || (len(nb) == 2 && nb[1] == '.'))) {
				continue
			}
			if typ == syscall.DT_UNKNOWN { // a file system without d_type
				if fi, err := os.Lstat(filepath.Join(dir, string(nb))); err != nil || !fi.Mode().IsRegular() {
					continue
				}
			} else if typ != syscall.DT_REG {
				continue
			}
			arena = append(arena, nb...)
			ends = append(ends, len(arena))
		}
	}
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
//
// The first listed records of ul were listed before this scan (the rest
// establishUidlist gave out).
func (r *Replica) scanContents(ctx context.Context, box *Box, name, dir, rel string, ul *maildir.Uidlist, listed int, st Stamp, changed, unborn bool, res *ScanResult) (bool, error) {
	if box.Deleted || box.Missing {
		// It is back (restored by hand, or recreated): a new epoch.
		if box.Deleted {
			box.Revived = r.lastDelete(box.GUID)
		}
		box.Deleted, box.Missing, box.DeletedT, box.MergedInto = false, false, 0, model.MailboxGUID{}
		box.Epoch = randomUint64()
		changed = true
	}
	if box.Name != name && !strings.HasPrefix(filepath.Base(rel), "."+TmpPrefix) && !strings.HasPrefix(filepath.Base(rel), TmpPrefix) && !r.loc.IsHidden(dir) {
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
	if missed, err := r.missedFile(box, ul, files); err != nil {
		return false, r.wrap(name, err)
	} else if missed {
		// A file that Dovecot moved from new/ to cur/ between our reads
		// of cur/ and new/ (a client opened the folder) is in neither
		// listing, and a file renamed in cur/ for a flag change can be
		// missed by that read too: its record would be taken for an
		// expunge, or a new one go unrecorded below the UIDNEXT read
		// from the uidlist. A uidlist record without its file that may
		// be such a one: read the directories again, and take what the
		// second reading adds.
		more, _, err := listFiles(dir)
		if err != nil {
			return false, r.wrap(name, err)
		}
		for base, f := range more {
			if files[base] == nil {
				files[base] = f
			}
		}
	}
	for _, b := range bad {
		r.log.Warn("ignoring a file whose name is not a Maildir name", "mailbox", name, "file", b)
	}
	if testHookAfterListing != nil {
		testHookAfterListing(dir)
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
	// UIDs listed before this scan (of a mailbox an unborn index finds):
	// their messages were born before, when exactly is unknown (an unsure
	// Born). Those the scan gives out now are born now.
	var listedBefore map[uint32]bool
	if unborn {
		listedBefore = make(map[uint32]bool, listed)
		for _, rec := range ul.Records[:listed] {
			listedBefore[rec.UID] = true
		}
	}
	if len(fresh) > 0 || len(reborn) > 0 || ul.GUID == [16]byte{} {
		// Files without UIDs: assign them under Dovecot's lock, as Dovecot
		// would, in name order (delivery order for Dovecot-style names).
		var post *Stamp
		ul, files, post, err = r.assignUIDs(ctx, name, dir, ul, reborn)
		if err != nil {
			return false, err
		}
		if post != nil {
			// The index records what was written (under the lock): its
			// stamp is the written file's, so that the next scan need not
			// read the uidlist again. cur/ and new/ keep the times from
			// before the listing.
			st.Uidlist, st.UidlistSize, st.UidlistIno = post.Uidlist, post.UidlistSize, post.UidlistIno
		}
	}
	kw, _, err := maildir.ReadKeywords(dir)
	if err != nil {
		return false, r.wrap(name, err)
	}

	var held int
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		if len(r.renumbered) > 0 && !r.opt.DryRun {
			// This scan reads the renames a killed apply journaled
			// (renumber.go): their entry goes with its commit.
			if err := clearRenumbers(tx, dir); err != nil {
				return err
			}
		}
		sameUV := box.UIDValidity == ul.UIDValidity
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
		if box.Name != name && !strings.Contains(rel, TmpPrefix) && !r.loc.IsHidden(dir) {
			box.NameT = r.store.stamp(tx, box.NameT)
			box.Name = name
		}
		if box.NameT == 0 {
			box.NameT = r.store.stamp(tx, 0)
		}
		preNext := box.UIDNext
		box.UIDNext = max(box.UIDNext, ul.NextUID)
		// The lowest UID of a record left for the next scan because its
		// file moved since the listing: UIDNEXT stays at or below it.
		var unrecorded uint32
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
		// Two records of one GUID that an old bug left (dupguid.go): the
		// scan's own rule decides which file keeps the GUID.
		dupRec, err := dupGUIDRecords(tx, box.GUID, old)
		if err != nil {
			return err
		}
		if len(dupRec) > 0 {
			r.log.Warn("repairing an index that held two records of one message GUID", "mailbox", name, "records", len(dupRec))
			box.Epoch = randomUint64() // what peers saved of it is stale
			changed = true
		}
		// With dovecot-keywords unchanged, a file name the index knows
		// stands for the flags the index has.
		kwSame := box.Stamp.Keywords == st.Keywords
		// Where each message GUID lives in the uidlist now: a record whose
		// UID changed hands, or vanished, while its message lives on at
		// another UID was renumbered (an interrupted apply, or Dovecot), not
		// expunged.
		guids := messageGUIDs(ul.Records, func(base string) bool { return files[base] != nil }, func(uid uint32, base string) string {
			if m := oldBy[uid]; m != nil && m.fileBase() == base && !dupRec[uid] {
				return m.GUID
			}
			return ""
		})
		// Only the same file at another UID is the same instance
		// renumbered (Dovecot's "giving a new UID" keeps the name); a file
		// of another name is a new copy, as when a client moves the
		// message out and back (Dovecot saves it under a new name with
		// the GUID in the G field): the old record was expunged, and the
		// copy is born now. Taken for a renumbering, the copy kept the old
		// instance's Born and the old UID's path, and the other side's
		// expunge of the old instance reached it: with the other side's
		// copy in the folder it had been moved to killed by this side's
		// move out of it, no copy was left (race8's stress run;
		// TestMovedOutOnBothSidesAndBackOnOneIsNotLost).
		oldBase := make(map[string]string, len(old))
		for _, m := range old {
			oldBase[m.GUID] = m.fileBase()
		}
		baseAt := make(map[uint32]string, len(ul.Records))
		for _, rec := range ul.Records {
			baseAt[rec.UID] = baseOf(rec.FileName)
		}
		liveAt := map[string]uint32{}
		for uid, g := range guids {
			if b, ok := oldBase[g]; !ok || b == baseAt[uid] || r.renumbered[baseAt[uid]] == b {
				liveAt[g] = uid
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
		// Born stamps of adds that a killed apply linked (born.go).
		journal := bornJournal(tx, box.GUID)
		if err := clearBornJournal(tx, box.GUID); err != nil {
			return err
		}
		seen := map[uint32]bool{}
		for _, rec := range ul.Records {
			base := baseOf(rec.FileName)
			f := files[base]
			if f == nil {
				continue
			}
			seen[rec.UID] = true
			guid, ok := guids[rec.UID]
			if !ok {
				// Its GUID and its base name both name other files here:
				// leave it as the index has it (never an expunge).
				r.log.Warn("a message's GUID and file name are both taken by other messages; not replicating it", "mailbox", name, "uid", rec.UID, "file", rec.FileName)
				continue
			}
			om := oldBy[rec.UID]
			if kwSame && om != nil && om.GUID == guid && om.File == f.name && om.New == f.inNew && !om.Held {
				continue // the same file name means the same flags: unchanged
			}
			want := flagsOf(f.fn, kw)
			if om != nil && om.GUID != guid {
				var t *model.Tombstone
				if !dupRec[om.UID] { // (a doubled record is no message that went anywhere)
					t = retire(om)
				}
				if err := bt.drop(om.UID, t); err != nil {
					return err
				}
				om = nil
			}
			if om == nil {
				m := &Msg{Message: model.Message{UID: rec.UID, GUID: guid, New: f.inNew}, File: f.name}
				if o := renumberedFrom(guid, rec.UID); o != nil && o.Born != 0 {
					m.Born = o.Born // the same instance at a new UID
				} else {
					m.Born = r.bornOf(tx, journal, guid, listedBefore[rec.UID])
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
					// Gone since the listing (moved to cur/, renamed for
					// flags, expunged): the next scan sees it.
					if unrecorded == 0 || rec.UID < unrecorded {
						unrecorded = rec.UID
					}
					continue
				}
				m.Size = fi.Size()
				m.Mtime = fi.ModTime().UnixNano()
				if f.fn.VSize > 0 {
					m.VSize = f.fn.VSize
				}
				if sameUV && rec.UID < preNext {
					// A new record below the UIDNEXT the index had: a
					// message an earlier scan missed (its file moved while
					// it read, and an apply took the UIDNEXT above it).
					// A peer's saved state may say both sides agree below
					// a UIDNEXT above it, and the next merge would take it
					// for a record the peer has too, for good (property
					// seed 14445215212692406235). Those states are stale:
					// the sync compares this mailbox in full.
					box.Epoch = randomUint64()
					r.log.Info("a message at a UID below the index's UIDNEXT, unseen before: comparing the mailbox in full", "mailbox", name, "uid", rec.UID)
				}
				if err := bt.put(m); err != nil {
					return err
				}
				changed = true
				continue
			}
			if om.fileBase() != base {
				// Another file at the same UID and GUID (never made by
				// Dovecot or twinbox; an index out of step): it is this one.
				om.Base = ""
				if base != guid {
					om.Base = base
				}
			}
			ch, err := r.refreshKnown(tx, bt, om, f, want, kw)
			if err != nil {
				return err
			}
			changed = changed || ch
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
			!r.exemptFromMassExpunge(box, name)
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
		box.Stamp = st.settled(r.scanAt)
		if unrecorded != 0 && box.UIDNext > unrecorded {
			// A UIDNEXT above a record the index does not have would go
			// into the base the sync saves, and the next sync would take
			// that message, at a UID below the base on this side only,
			// for one the peer has unchanged: it would never reach the
			// peer. (The apply of this sync, finding the uidlist's NEXTUID
			// above this one, reports the mailbox changed: no saved state.)
			box.UIDNext = max(preNext, unrecorded)
			box.Stamp.Uidlist = 0 // read in full next time
		}
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

// messageGUIDs gives each uidlist record whose file exists (has(base))
// its message GUID. A record the index already knows (known returns the
// GUID recorded for that UID and file base, "" if none) keeps that GUID:
// a message's GUID never changes while it lives at one UID. Any other
// record gets its G field, else its base name. Dovecot copies a message
// within one mailbox as a new file whose G field names the original, so
// one GUID can stand for two files of a mailbox; but a GUID names one
// message per mailbox. Among the new records that share a GUID not taken
// yet, the file whose base name is that GUID gets it (else the lowest UID),
// and each of the others is known by its own base name, unique in the
// mailbox, or, where that is another record's GUID too, by its base name
// and UID.
//
// Without the index's memory the GUID of a copy would depend on whether
// its original is still there: expunging the original would turn the copy
// into the original at the copy's UID.
func messageGUIDs(recs []maildir.UidRecord, has func(base string) bool, known func(uid uint32, base string) string) map[uint32]string {
	type cand struct {
		uid        uint32
		base, guid string
	}
	out := map[uint32]string{}
	taken := map[string]bool{}
	var cs []cand
	for _, rec := range recs {
		base := baseOf(rec.FileName)
		if !has(base) {
			continue
		}
		if g := known(rec.UID, base); g != "" && !taken[g] {
			out[rec.UID] = g
			taken[g] = true
			continue
		}
		g := base
		if v, ok := rec.Get('G'); ok && v != "" {
			g = v
		}
		cs = append(cs, cand{rec.UID, base, g})
	}
	groups := map[string][]int{}
	var order []string
	for i, c := range cs {
		if _, ok := groups[c.guid]; !ok {
			order = append(order, c.guid)
		}
		groups[c.guid] = append(groups[c.guid], i)
	}
	keeper := map[int]bool{}
	for _, g := range order {
		if taken[g] {
			continue // the index knows another message by it
		}
		idx := groups[g]
		k := idx[0]
		for _, i := range idx {
			if cs[i].uid < cs[k].uid {
				k = i
			}
		}
		for _, i := range idx {
			if cs[i].base == g {
				k = i
				break
			}
		}
		keeper[k] = true
		out[cs[k].uid] = g
		taken[g] = true
	}
	rest := make([]int, 0, len(cs)-len(keeper))
	for i := range cs {
		if !keeper[i] {
			rest = append(rest, i)
		}
	}
	sort.Slice(rest, func(a, b int) bool { return cs[rest[a]].uid < cs[rest[b]].uid })
	for _, i := range rest {
		c := cs[i]
		g := c.base
		if taken[g] {
			// Its base name is another message's GUID too: Dovecot's COPY
			// or MOVE into another mailbox keeps the base name, so a
			// message moved out and back in again comes back under its
			// old name while a copy made meanwhile holds its GUID. A GUID
			// of its own, unique in the mailbox (and kept by the index).
			suffix := fmt.Sprintf("-u%d", c.uid)
			g = c.base[:min(len(c.base), 255-len(suffix))] + suffix // a GUID is at most 255 bytes
		}
		if !taken[g] {
			out[c.uid] = g
			taken[g] = true
		}
	}
	return out
}

// refreshKnown brings the record om of a file the index knows up to date
// with the file f (flags from want): flags that differ get new stamps and a
// modseq; a rename without a flag change (new/ -> cur/) is stored quietly.
func (r *Replica) refreshKnown(tx *bolt.Tx, bt *boxTx, om *Msg, f *diskFile, want map[string]bool, kw []string) (bool, error) {
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
		return true, bt.put(om)
	}
	if om.File != f.name || om.New != f.inNew {
		// Moved new/ -> cur/ or renamed without a flag change: no modseq.
		om.File, om.New = f.name, f.inNew
		return false, bt.putQuiet(om)
	}
	return false, nil
}

// scanKnown scans a mailbox whose dovecot-uidlist and dovecot-keywords are
// as the index last recorded them (same mtime, size and inode) while cur/ or
// new/ changed. With the uidlist unchanged the index's records are its
// records, so a listed file whose base the index knows is that record's
// file: renamed files (flag changes, new/ -> cur/) are found by one read of
// the directories and one pass over the index that decodes only the
// records whose file name changed, without parsing the uidlist. Files the
// index does not know get UIDs under Dovecot's lock as in the full scan,
// when their UIDs are plain new ones.
//
// With cur/'s mtime unchanged only new/ is listed. Anything else (a record
// whose file is gone, a held record whose file is back, a base in both cur/
// and new/, a new file at a UID the index holds or retired, a message GUID
// twice, a dry run with new files) returns handled = false before the index
// is written (UIDs may have been assigned), and the full scan runs.
func (r *Replica) scanKnown(ctx context.Context, box *Box, name, dir string, st Stamp) (handled, changed bool, err error) {
	if box.NameT == 0 || box.Stamp.Keywords != st.Keywords {
		return false, false, nil
	}
	// With cur/ as it was, only new/ is read: cur/'s files are where the
	// index says.
	curSame := st.Cur == box.Stamp.Cur && st.Cur != -1
	files, bad, err := listSubs(dir, !curSame, true, true)
	if err != nil {
		return false, false, r.wrap(name, err)
	}
	type hit struct {
		uid uint32
		f   *diskFile
	}
	var renamed []hit
	matched := 0 // files marked matched
	inCur := 0   // records of files in an unchanged cur/
	ok := true
	err = r.store.db.View(func(tx *bolt.Tx) error {
		bb, err := buckets(tx, box.GUID, false)
		if err != nil || bb == nil {
			return err
		}
		c := bb.uid.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			p, good := peekMsg(v)
			if !good {
				ok = false
				return nil
			}
			base := p.base
			if len(base) == 0 {
				base = p.guid
			}
			f := files[string(base)]
			if curSame && !p.new && !p.held {
				if f != nil {
					ok = false // a copy in new/ too: the full scan decides
					return nil
				}
				inCur++
				continue
			}
			if p.held {
				if f != nil {
					ok = false // back: the full scan un-holds it
					return nil
				}
				continue
			}
			if f == nil || f.matched {
				ok = false // gone (expunged or renumbered), or a base twice
				return nil
			}
			same := string(p.file) == f.name && p.new == f.inNew
			if !same && !f.parse() {
				ok = false // the base's file has a name that is no Maildir name
				return nil
			}
			f.matched = true
			matched++
			if !same {
				renamed = append(renamed, hit{p.uid, f})
			}
		}
		return nil
	})
	if err != nil {
		return false, false, r.wrap(name, err)
	}
	if !ok {
		return false, false, nil
	}
	var fresh []*diskFile
	for base, f := range files {
		if !f.matched {
			if !f.parse() {
				bad = append(bad, subdir(f.inNew)+"/"+f.name)
				delete(files, base)
				continue
			}
			fresh = append(fresh, f)
		}
	}
	ulStamp := st
	var ul *maildir.Uidlist
	if len(fresh) > 0 {
		if r.opt.DryRun {
			return false, false, nil
		}
		var post Stamp
		ul, post, err = r.assignKnown(ctx, box, name, dir, files, fresh)
		if err != nil {
			return false, false, err
		}
		if ul == nil {
			return false, false, nil
		}
		ulStamp.Uidlist, ulStamp.UidlistSize, ulStamp.UidlistIno = post.Uidlist, post.UidlistSize, post.UidlistIno
	}
	for _, b := range bad {
		r.log.Warn("ignoring a file whose name is not a Maildir name", "mailbox", name, "file", b)
	}
	uidOf := map[string]maildir.UidRecord{}
	if ul != nil {
		want := map[string]bool{}
		for _, f := range fresh {
			want[f.fn.Base] = true
		}
		for _, rec := range ul.Records {
			if b := baseOf(rec.FileName); want[b] {
				if _, dup := uidOf[b]; dup {
					ul = nil // listed twice: the full scan sorts it out
					break
				}
				uidOf[b] = rec
			} else if rec.UID >= box.UIDNext {
				// A message Dovecot saved after our listing (its record
				// is in the uidlist read under the lock, its file is not
				// in the listing): recording the uidlist's NEXTUID without
				// its record would make the sync save a base above a UID
				// only this side has, which the next sync then takes for
				// one both sides have. The full scan reads it.
				ul = nil
				break
			}
		}
	}
	kw := box.Keywords
	full := false
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		bt, err := openBoxTx(tx, box)
		if err != nil {
			return err
		}
		for _, h := range renamed {
			om, err := bt.get(h.uid)
			if err != nil {
				return err
			}
			if om == nil {
				return fmt.Errorf("UID %d left the index during the scan", h.uid)
			}
			ch, err := r.refreshKnown(tx, bt, om, h.f, flagsOf(h.f.fn, kw), kw)
			if err != nil {
				return err
			}
			changed = changed || ch
		}
		added := 0
		journal := bornJournal(tx, box.GUID)
		if err := clearBornJournal(tx, box.GUID); err != nil {
			return err
		}
		if len(fresh) > 0 {
			// Plain new UIDs only: neither a record nor a tombstone at the
			// UID, and the message's GUID not elsewhere in this mailbox.
			for _, f := range fresh {
				rec, listed := uidOf[f.fn.Base]
				if ul == nil || !listed || bt.bb.uid.Get(u32(rec.UID)) != nil || bt.bb.tomb.Get(u32(rec.UID)) != nil || rec.UID < box.UIDNext {
					// (Below the index's UIDNEXT: a message an earlier
					// scan missed; the full scan makes saved states stale.)
					full = true
					return errFullScan
				}
				guid := f.fn.Base
				if g, ok := rec.Get('G'); ok && g != "" {
					guid = g
				}
				for _, h := range findGUID(tx, guid) {
					if h.Box == box.GUID {
						full = true
						return errFullScan
					}
				}
				m := &Msg{Message: model.Message{UID: rec.UID, GUID: guid, New: f.inNew, Born: r.bornOf(tx, journal, guid, false)}, File: f.name}
				if guid != f.fn.Base {
					m.Base = f.fn.Base
				}
				for n := range flagsOf(f.fn, kw) {
					if m.Flags == nil {
						m.Flags = model.Flags{}
					}
					m.Flags[n] = model.FlagVal{Set: true}
				}
				fi, err := os.Stat(filepath.Join(dir, subdir(f.inNew), f.name))
				if err != nil {
					full = true // gone since the listing
					return errFullScan
				}
				m.Size, m.Mtime = fi.Size(), fi.ModTime().UnixNano()
				if f.fn.VSize > 0 {
					m.VSize = f.fn.VSize
				}
				if err := bt.put(m); err != nil {
					return err
				}
				added++
			}
			box.UIDNext = max(box.UIDNext, ul.NextUID)
			changed = true
		}
		box.Stamp = ulStamp.settled(r.scanAt)
		box.Messages = inCur + matched + added
		return putBox(tx, box)
	})
	if full {
		return false, false, nil
	}
	if err != nil {
		return false, false, r.wrap(name, err)
	}
	return true, changed, nil
}

// missingRecheck is how long a scan waits before it looks again for
// mailboxes no directory holds and no DELETE record names (a client's
// DELETE logs the delete after it removed the directory).
var missingRecheck = 100 * time.Millisecond

// testHookBeforeMissingRecheck, if set, is called with the first such
// mailbox's name before the scan looks again.
var testHookBeforeMissingRecheck func(name string)

// errFullScan rolls back a fast-path scan transaction.
var errFullScan = errors.New("full scan needed")

// assignKnown gives UIDs to the listed files the uidlist does not list,
// under Dovecot's lock, and returns the uidlist and the stamp of the file
// as written (or as found, if nothing needed a UID), taken under the lock.
// It returns a nil uidlist when the uidlist is no longer the one the index
// knows (another GUID or UIDVALIDITY): the full scan handles that.
//
// When the uidlist is still the one the index recorded (same mtime, size
// and inode, checked on the open file under the lock), the fresh files
// (those no index record names) get their records appended to it
// (appendFresh) rather than the whole list rewritten.
func (r *Replica) assignKnown(ctx context.Context, box *Box, name, dir string, files map[string]*diskFile, unknown []*diskFile) (*maildir.Uidlist, Stamp, error) {
	var post Stamp
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		return nil, post, r.wrap(name, err)
	}
	defer lk.Unlock()
	if ul, ok, err := r.appendFresh(box, name, dir, unknown); err != nil || ok {
		if err != nil {
			return nil, post, err
		}
		return ul, stampOf(dir), nil
	}
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		return nil, post, r.wrap(name, err)
	}
	if model.MailboxGUID(ul.GUID) != box.GUID || ul.UIDValidity != box.UIDValidity {
		return nil, post, nil
	}
	// The listed files the uidlist names (a map of the listing's size,
	// not of the uidlist's: a new message in a 10k mailbox lists new/).
	inList := make(map[string]bool, len(files))
	for _, rec := range ul.Records {
		if b := baseOf(rec.FileName); files[b] != nil {
			inList[b] = true
		}
	}
	var fresh []string
	for base := range files {
		if !inList[base] {
			fresh = append(fresh, base)
		}
	}
	if len(fresh) > 0 {
		sort.Slice(fresh, func(i, j int) bool { return lessName(fresh[i], fresh[j]) })
		ul.NextUID = max(ul.NextUID, 1)
		for _, base := range fresh {
			ul.Records = append(ul.Records, maildir.UidRecord{UID: ul.NextUID, FileName: files[base].name})
			ul.NextUID++
		}
		if err := r.writeUidlist(dir, ul); err != nil {
			return nil, post, r.wrap(name, err)
		}
	}
	post = stampOf(dir)
	return ul, post, nil
}

// appendFresh appends records for the fresh files to the mailbox's
// dovecot-uidlist, in the order the full scan gives them UIDs, when the
// file is as the index recorded it (so that its records are the index's
// and the fresh files are not among them) and can take an append
// (maildir.UidlistAppend: a newline at its end, one write within a page).
// It reports false, with nothing written, when the long way must run.
// The caller holds the dotlock.
func (r *Replica) appendFresh(box *Box, name, dir string, fresh []*diskFile) (*maildir.Uidlist, bool, error) {
	if len(fresh) == 0 || r.opt.DryRun || !uidlistAppends {
		return nil, false, nil
	}
	a, err := maildir.OpenUidlistAppend(dir)
	if err != nil {
		return nil, false, nil // the long way reads it and says what is wrong
	}
	defer a.Close()
	if !uidlistIs(a, box.Stamp) || model.MailboxGUID(a.Header.GUID) != box.GUID || a.Header.UIDValidity != box.UIDValidity {
		return nil, false, nil
	}
	fs := append([]*diskFile(nil), fresh...)
	sort.Slice(fs, func(i, j int) bool { return lessName(fs[i].fn.Base, fs[j].fn.Base) })
	next := max(a.NextUID, 1)
	recs := make([]maildir.UidRecord, 0, len(fs))
	for _, f := range fs {
		if a.Lists(f.fn.Base) {
			return nil, false, nil
		}
		recs = append(recs, maildir.UidRecord{UID: next, FileName: f.name})
		next++
	}
	if _, err := a.Append(recs); err != nil {
		if errors.Is(err, maildir.ErrNoAppend) {
			return nil, false, nil
		}
		return nil, false, r.wrap(name, err)
	}
	ul := *a.Header
	ul.NextUID, ul.Records = a.NextUID, recs
	return &ul, true, nil
}

// uidlistAppends turns the in-place appends of uidlist records on
// (appendFresh, and the adds of applyBox). Off, every change to a uidlist
// is a whole rewrite through a temporary file and a rename, the letter of
// contract §7; on, new records are appended as Dovecot appends them
// (design §9 item 13).
var uidlistAppends = true

// uidlistIs reports whether the open uidlist is the one of stamp st (same
// mtime, size and inode).
func uidlistIs(a *maildir.UidlistAppend, st Stamp) bool {
	return st.Uidlist != -1 && st.Uidlist != 0 && a.Info.ModTime().UnixNano() == st.Uidlist &&
		a.Info.Size() == st.UidlistSize && int64(a.Ino) == st.UidlistIno
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
// again: they must get new UIDs. Each maps to its tombstone.
func (r *Replica) rebornUIDs(box *Box, ul *maildir.Uidlist, files map[string]*diskFile) (map[uint32]model.Tombstone, error) {
	reborn := map[uint32]model.Tombstone{}
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
				reborn[rec.UID] = t
			}
		}
		return nil
	})
	return reborn, err
}

// When it wrote the uidlist it also returns the written file's stamp (only
// its uidlist fields are set), taken under the lock.
func (r *Replica) assignUIDs(ctx context.Context, name, dir string, seen *maildir.Uidlist, reborn map[uint32]model.Tombstone) (*maildir.Uidlist, map[string]*diskFile, *Stamp, error) {
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		return nil, nil, nil, r.wrap(name, err)
	}
	defer lk.Unlock()
	var ul *maildir.Uidlist
	if r.opt.DryRun {
		c := *seen
		c.Records = append([]maildir.UidRecord(nil), seen.Records...)
		ul = &c
	} else if ul, _, err = maildir.ReadUidlist(dir); err != nil {
		return nil, nil, nil, r.wrap(name, err)
	}
	files, _, err := listFiles(dir)
	if err != nil {
		return nil, nil, nil, r.wrap(name, err)
	}
	if len(reborn) > 0 {
		kept := ul.Records[:0:0]
		for _, rec := range ul.Records {
			if t, ok := reborn[rec.UID]; ok {
				logReborn(r.log, name, dir, rec, t)
				continue
			}
			kept = append(kept, rec)
		}
		ul.Records = kept
	}
	if r.giveUIDs(name, ul, files) == 0 && ul.GUID != [16]byte{} {
		return ul, files, nil, nil
	}
	if ul.GUID == [16]byte{} {
		ul.GUID = maildir.NewGUID()
	}
	if err := r.writeUidlist(dir, ul); err != nil {
		return nil, nil, nil, r.wrap(name, err)
	}
	if r.opt.DryRun {
		return ul, files, nil, nil
	}
	post := stampOf(dir)
	return ul, files, &post, nil
}

// logReborn says why the message of uidlist record rec gets a new UID:
// its UID was retired (tombstone t). The same message back at its old UID
// (its file restored, or a file name Dovecot reused) is what Dovecot calls
// "Expunged message reappeared"; another message at a UID the index
// retired is a UID used twice under one UIDVALIDITY (a folder that took
// over a deleted mailbox's identity and UIDs Dovecot gave before that, say).
// Either way no message is lost: it is kept under a new UID, and no client
// sees an old UID name another message.
func logReborn(log *slog.Logger, name, dir string, rec maildir.UidRecord, t model.Tombstone) {
	switch {
	case t.GUID != rec.GUID():
		log.Info("UID used before for another message: the message gets a new UID", "mailbox", name, "dir", dir, "uid", rec.UID, "guid", rec.GUID(), "retired_guid", t.GUID)
	case t.MovedTo != 0:
		log.Warn("renumbered message's file is back at its old UID: it gets a new UID", "mailbox", name, "dir", dir, "uid", rec.UID, "guid", rec.GUID(), "moved_to", t.MovedTo)
	default:
		log.Warn("expunged message reappeared: it gets a new UID", "mailbox", name, "dir", dir, "uid", rec.UID, "guid", rec.GUID())
	}
}

// giveUIDs lists, in ul, the files it does not list yet, in name order
// (delivery order for Dovecot-style names), from its NEXTUID on, and
// returns how many it added.
func (r *Replica) giveUIDs(name string, ul *maildir.Uidlist, files map[string]*diskFile) int {
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
	if len(fresh) == 0 {
		return 0
	}
	sort.Slice(fresh, func(i, j int) bool { return lessName(fresh[i], fresh[j]) })
	if ul.NextUID == 0 {
		ul.NextUID = 1
	}
	for _, base := range fresh {
		f := files[base]
		rec := maildir.UidRecord{UID: ul.NextUID, FileName: f.name}
		ul.Records = append(ul.Records, rec)
		r.log.Debug("new file gets a UID", "mailbox", name, "file", f.name, "uid", rec.UID)
		ul.NextUID++
	}
	return len(fresh)
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
type unlocker interface {
	Unlock() error
	// Check reports whether the lock is still ours (maildir.Dotlock.Check).
	Check() error
	// Moved tells the lock that its directory was renamed to dir.
	Moved(dir string)
}

type noLock struct{}

func (noLock) Unlock() error { return nil }
func (noLock) Check() error  { return nil }
func (noLock) Moved(string)  {}

// dirGone reports whether a mailbox directory no longer exists.
func dirGone(dir string) bool {
	_, err := os.Stat(dir)
	return errors.Is(err, fs.ErrNotExist)
}

// bringBack moves a mailbox that a killed apply left renamed aside (under a
// hidden name, where Dovecot does not show it) back to the directory of its
// name, if that is free; dirs is updated. One whose place is taken stays
// aside, scanned there, until a rename of the plan moves it. It reports
// whether it moved any.
func (r *Replica) bringBack(ctx context.Context, dirs []maildir.MailboxDir, byGUID map[model.MailboxGUID]*Box) (moved bool) {
	for i, d := range dirs {
		if !r.loc.IsHidden(d.Dir) {
			continue
		}
		ul, err := readUidlistHeader(d.Dir)
		if err != nil {
			continue
		}
		b := byGUID[model.MailboxGUID(ul.GUID)]
		if b == nil || b.Deleted || model.IsInbox(b.Name) {
			continue
		}
		dst, err := r.loc.MailboxDir(b.Name)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := r.loc.MkdirParents(filepath.Dir(dst)); err != nil {
			continue
		}
		if err := r.renameLocked(ctx, d.Dir, dst); err != nil {
			r.log.Warn("moving a mailbox back from a temporary name", "mailbox", b.Name, "dir", d.Dir, "error", err)
			continue
		}
		r.log.Info("moved a mailbox back from a temporary name", "mailbox", b.Name, "from", d.Dir)
		dirs[i] = maildir.MailboxDir{Name: b.Name, Dir: dst}
		moved = true
	}
	return moved
}

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
	if testHookUidlistWrite != nil {
		testHookUidlistWrite(dir)
	}
	return maildir.WriteUidlist(dir, ul)
}

// nudgeDovecot moves cur/'s mtime after establishUidlist wrote a uidlist
// under a new UIDVALIDITY in a directory Dovecot has indexed (its uidlist
// lost, or a copy's taken over by a new identity): Dovecot reads the
// uidlist again only when new/'s or cur/'s mtime changed
// (maildir.NudgeDovecot). Only where Dovecot's index of the folder lies in
// it (the default), or always when the location keeps Dovecot's indexes
// elsewhere (INDEX=: no sign of them here): the scan keeps the stamp it
// took before (the uidlist's parts aside), so a moved cur/ costs the next
// scan a full listing, which a directory Dovecot never opened (an MTA's, a
// new replica's) need not pay. A dry run writes nothing.
func (r *Replica) nudgeDovecot(dir string) error {
	if r.opt.DryRun {
		return nil
	}
	if r.loc.Index != "" {
		return maildir.NudgeDovecot(dir)
	}
	for _, f := range []string{"dovecot.index.log", "dovecot.index"} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return maildir.NudgeDovecot(dir)
		}
	}
	return nil
}

// exemptFromMassExpunge reports whether expunges in a mailbox are never
// held back as a mass expunge: a Trash or Junk by special-use (Dovecot's
// configuration) or by name (Options.MassExpungeExempt).
func (r *Replica) exemptFromMassExpunge(box *Box, name string) bool {
	if r.opt.MassExpungeExempt(name) {
		return true
	}
	special := []string{box.Special}
	if r.opt.SpecialUse != nil {
		special = append(special, r.opt.SpecialUse(name)...)
	}
	for _, s := range special {
		if strings.EqualFold(s, `\Trash`) || strings.EqualFold(s, `\Junk`) {
			r.log.Info("mass expunge not held: special-use mailbox", "mailbox", name, "special_use", s)
			return true
		}
	}
	return false
}
