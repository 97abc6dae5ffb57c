package index

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// ApplyResult is the replica package's result, with a helper.
type ApplyResult = replica.ApplyResult

func skip(res *ApplyResult, format string, args ...any) {
	res.Changed = true
	if len(res.Skipped) < 50 {
		res.Skipped = append(res.Skipped, fmt.Sprintf(format, args...))
	}
}

// Progress receives body transfer progress (may be nil).
type Progress interface {
	Add(messages int, bytes int64)
}

var tmpSeq atomic.Uint64

// perFileSyncMax is the largest batch of bodies made durable one fsync at a
// time; larger batches use one syncfs.
const perFileSyncMax = 128

// Apply carries out one side's part of a plan. The durability order:
//
//  1. bodies are written to tmp/ of their mailbox and made durable (one
//     syncfs for the whole batch);
//  2. under Dovecot's uidlist lock each mailbox's files are renamed, linked
//     or unlinked, then dovecot-keywords and dovecot-uidlist are replaced
//     atomically and the directories fsynced;
//  3. only then does the index record the changes (one transaction per
//     mailbox); the peer learns of success after every mailbox is done.
//
// A crash at any step leaves files that the next scan reads as they are.
//
// Clients keep working while a sync applies: a file or folder that a
// client deleted or renamed since the scan (an error wrapping
// fs.ErrNotExist), or a Dovecot lock held past the lock timeout, ends the
// apply early as skipped: the sync exits 2
// ("run again"), what was done is recorded, and the next sync, scanning
// afresh, does the rest.
func (r *Replica) Apply(ctx context.Context, sp *merge.SidePlan, src replica.BodySource) (*ApplyResult, error) {
	res, err := r.apply(ctx, sp, src)
	if err == nil || ctx.Err() != nil {
		return res, err
	}
	why := ""
	switch {
	case errors.Is(err, maildir.ErrLockTimeout):
		why = "a Dovecot lock was held longer than the lock timeout"
	case errors.Is(err, maildir.ErrLockLost):
		// Taken over by Dovecot as stale, or gone with its folder (a
		// client's DELETE or RENAME): nothing was written under it.
		why = "a Dovecot lock was taken over or its folder went away during the sync"
	case errors.Is(err, fs.ErrNotExist) && r.treeMoved():
		why = "a folder was deleted or renamed during the sync"
	case errors.Is(err, fs.ErrNotExist):
		// A file that was there a moment ago (a body, a folder on the
		// peer's side that a client deleted): never a reason to fail
		// while clients work; a sync that never gets past it would show
		// as one that never converges.
		why = "a file went away during the sync"
	default:
		return res, err
	}
	r.log.Info("apply stopped early; the next sync continues", "reason", why, "error", err)
	if res == nil {
		res = &ApplyResult{}
	}
	skip(res, "%s (%v): the rest waits for the next sync", why, err)
	return res, nil
}

// treeMoved reports whether some mailbox the index knows is no longer at
// its recorded directory (deleted, renamed, or replaced by another).
func (r *Replica) treeMoved() bool {
	boxes, err := r.loadBoxes()
	if err != nil {
		return false
	}
	for _, b := range boxes {
		if b.Deleted || b.Missing {
			continue
		}
		ul, err := readUidlistHeader(filepath.Join(r.loc.Root, b.Dir))
		if err != nil || model.MailboxGUID(ul.GUID) != b.GUID {
			return true
		}
	}
	return false
}

func (r *Replica) apply(ctx context.Context, sp *merge.SidePlan, src replica.BodySource) (_ *ApplyResult, err error) {
	res := &ApplyResult{}
	if mailbox, err := r.validatePlan(sp); err != nil {
		r.fillEpochs(res)
		return res, r.wrap(mailbox, fmt.Errorf("refusing a plan: %w", err))
	}
	prog := r.opt.Progress
	defer r.fillEpochs(res)
	work := !sp.Empty()
	r.inApply, r.applyMarked, r.tmpRecorded = true, false, nil
	defer func() { r.inApply, r.applyMarked, r.tmpRecorded = false, false, nil }()
	// The dirty_apply mark must be durable before the apply changes the
	// disk. Mailbox operations come first: marked now. Message work alone
	// marks it with the first dirty_tmp record (setDirtyTmp, from
	// recordTmpDirs or prepareBodies, before any body is written) or as
	// applyBox starts, whichever comes first: one commit (two fdatasyncs)
	// fewer for a small sync.
	if work && len(sp.Renames)+len(sp.Creates)+len(sp.Adopts)+len(sp.Deletes)+len(sp.Subs) > 0 {
		if err := r.markApplying(); err != nil {
			return res, r.wrap("", err)
		}
	}
	// Dovecot's UIDVALIDITY counter passes every value the mailboxes made
	// here carry before the first is made (maildir/uidvalidity.go).
	r.raiseUIDValidity(sp)
	aside, err := r.applyRenames(ctx, sp.Renames, res)
	defer func() {
		if err != nil {
			// An apply that stops (its peer failed, the connection was
			// cut) does not leave a folder of this user under a hidden
			// name until the next sync: back to where it was, if free.
			r.putBack(aside)
		}
	}()
	if err != nil {
		return res, err
	}
	// The mailboxes made here are recorded in one index commit (one per
	// mailbox cost a 20-folder first sync 38 fdatasyncs), made before
	// anything else reads the index or touches their messages.
	type madeBox struct {
		name   string
		record func(*bolt.Tx) error
	}
	var made []madeBox
	recordMade := func() error {
		if len(made) == 0 {
			return nil
		}
		failed := ""
		err := r.store.db.Update(func(tx *bolt.Tx) error {
			for _, m := range made {
				if err := m.record(tx); err != nil {
					failed = m.name
					return err
				}
			}
			return nil
		})
		if err == nil {
			res.MailboxOps += len(made)
		}
		made = nil
		return r.wrap(failed, err)
	}
	for _, op := range sp.Creates {
		var first uint32 // no message work planned: 0
		for i := range sp.Boxes {
			if sp.Boxes[i].GUID == op.GUID {
				first = sp.Boxes[i].FirstUID()
			}
		}
		if dir, err := r.loc.MailboxDir(op.Name); err == nil {
			if ul, err := readUidlistHeader(dir); err == nil && model.MailboxGUID(ul.GUID) != op.GUID {
				for _, d := range sp.Deletes {
					if d.GUID == model.MailboxGUID(ul.GUID) {
						if err := r.applyDelete(ctx, d, res); err != nil {
							return res, keepFirst(err, recordMade())
						}
					}
				}
			}
		}
		rec, err := r.applyCreate(ctx, op, first, res)
		if err != nil {
			return res, keepFirst(err, recordMade())
		}
		if rec != nil {
			made = append(made, madeBox{op.Name, rec})
		}
	}
	if err := recordMade(); err != nil {
		return res, err
	}
	adopts := map[model.MailboxGUID]merge.Adopt{}
	gone := map[model.MailboxGUID]bool{}
	for _, a := range sp.Adopts {
		var next uint32 // the UIDNEXT the rewrite reaches (journaled)
		for i := range sp.Boxes {
			if sp.Boxes[i].GUID == a.To {
				next = sp.Boxes[i].UIDNext
			}
		}
		made, err := r.applyAdoptDir(ctx, a, next, res)
		if err != nil {
			return res, err
		}
		if !made {
			gone[a.To] = true
			continue
		}
		adopts[a.To] = a
	}
	if err := r.recordTmpDirs(sp, adopts); err != nil {
		return res, err
	}
	pre := startPrecreator(r.precreateTargets(sp, adopts), r.opt.Hostname)
	defer pre.close()
	// Mailbox by mailbox: its adds (pulled from the peer when the plan
	// came without them), its bodies, then its files, control files and
	// index. Only one mailbox's adds are held at a time.
	lazy, _ := src.(replica.AddSource)
	var deferred []merge.BoxPlan
	for i := range sp.Boxes {
		bp := &sp.Boxes[i]
		pre.reach(i)
		pulled := false // adds pulled now: not journaled with dirty_tmp
		if bp.AddCount > 0 && len(bp.Adds) == 0 {
			if lazy == nil {
				return res, r.errf("", "plan announces %d adds for mailbox %s and nobody to ask for them", bp.AddCount, bp.GUID)
			}
			adds, err := lazy.Adds(ctx, i)
			if err != nil {
				return res, err
			}
			one := &merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: bp.GUID, Adds: adds}}}
			if name, err := r.validatePlan(one); err != nil {
				return res, r.wrap(name, fmt.Errorf("refusing a plan: %w", err))
			}
			bp.Adds = adds
			pulled = true
		}
		if gone[bp.GUID] {
			// The mailbox to merge went away during the sync (a client
			// deleted it): the next sync sees why.
			bp.Adds = nil
			continue
		}
		var ap *merge.Adopt
		if a, ok := adopts[bp.GUID]; ok {
			ap = &a
		}
		if ap == nil {
			if b, err := r.getBox(bp.GUID); err != nil {
				return res, r.wrap("", err)
			} else if b == nil {
				if !planCreates(sp, bp.GUID) {
					return res, r.errf("", "refusing a plan: mailbox %s is not in the index and the plan does not create it", bp.GUID)
				}
				// Its create was skipped: the disk changed since the scan
				// (a client made a folder of that name meanwhile, say).
				skip(res, "mailbox %s: not made, so its messages wait for the next sync", bp.GUID)
				bp.Adds = nil
				continue
			}
		}
		// Expunges wait until every mailbox got its adds: a message moved
		// between folders is linked from the file about to be expunged.
		// An expunge of a message this mailbox also gets anew (its
		// instance here was killed, the peer's survives) is done with the
		// add, in one index commit (its body is in tmp/ by then): apart,
		// an apply stopped in between would leave the index two records
		// of one GUID in the mailbox, which every later report repeats
		// and the peer refuses (property seed 5769373144519208670).
		work := *bp
		if ap == nil && !bp.Reset && len(bp.Expunges)+len(bp.Release) > 0 {
			var now, later []merge.Expunge
			if len(bp.Adds) > 0 {
				adding := make(map[string]bool, len(bp.Adds))
				for _, a := range bp.Adds {
					adding[a.Msg.GUID] = true
				}
				for _, e := range bp.Expunges {
					if adding[e.GUID] {
						now = append(now, e)
					} else {
						later = append(later, e)
					}
				}
			} else {
				later = bp.Expunges
			}
			if len(later)+len(bp.Release) > 0 {
				deferred = append(deferred, merge.BoxPlan{GUID: bp.GUID, UIDNext: bp.UIDNext, Expunges: later, Release: bp.Release})
			}
			work.Expunges, work.Release = now, nil
		}
		if ap == nil && planCreates(sp, bp.GUID) {
			if err := r.reserveUIDs(ctx, bp); err != nil {
				return res, err
			}
		}
		one := &merge.SidePlan{Adopts: sp.Adopts, Boxes: []merge.BoxPlan{work}}
		tmpFiles, err := r.prepareBodies(ctx, one, src, res, prog, pre, i, pulled)
		pre.finish(i)
		if err == nil && !work.Empty() {
			err = r.applyBox(ctx, &work, ap, tmpFiles, res)
			r.store.touched(len(work.Adds) + len(work.Moves) + len(work.Flags) + len(work.Expunges))
		}
		for _, p := range tmpFiles {
			if p != "" {
				os.Remove(p)
			}
		}
		bp.Adds = nil
		if err != nil {
			return res, err
		}
	}
	for i := range deferred {
		if err := r.applyBox(ctx, &deferred[i], nil, nil, res); err != nil {
			return res, err
		}
	}
	for _, op := range sp.Deletes {
		if err := r.applyDelete(ctx, op, res); err != nil {
			return res, err
		}
	}
	// Renames that waited aside for a target that the adopts, creates or
	// deletes since have freed.
	if err := r.finishAside(ctx, aside, res); err != nil {
		return res, err
	}
	aside = nil
	if len(sp.Subs) > 0 {
		if err := r.applySubs(sp.Subs); err != nil {
			return res, err
		}
	}
	// The apply is over: its temporary files are gone (one transaction,
	// none when there was nothing to do: a commit costs two fdatasyncs).
	needs := work
	if !needs {
		_ = r.store.db.View(func(tx *bolt.Tx) error {
			needs = tx.Bucket(bMeta).Get([]byte("dirty_tmp")) != nil
			return nil
		})
	}
	if !needs {
		return res, nil
	}
	if err := r.store.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		if m.Get([]byte("dirty_tmp")) != nil {
			if err := m.Delete([]byte("dirty_tmp")); err != nil {
				return err
			}
		}
		// Journaled Born stamps of adds that no mailbox commit cleared
		// (that mailbox's work was skipped), or that a killed apply left
		// in a mailbox it never got to change: the scan before this apply
		// has read what there was to read.
		if err := clearBornJournals(tx); err != nil {
			return err
		}
		// Likewise adopts whose uidlist was not rewritten (skipped).
		if err := clearAdoptJournals(tx); err != nil {
			return err
		}
		if work {
			return m.Delete([]byte("dirty_apply"))
		}
		return nil
	}); err != nil {
		return res, r.wrap("", err)
	}
	return res, nil
}

// validatePlan checks a plan from a peer before any of it is carried out:
// merge.ValidatePlan, then every name that becomes a directory against this
// replica's layout (so that a bad name is refused up front, not after the
// steps before it were done). It returns the name of the mailbox at fault,
// when known, for the error.
func (r *Replica) validatePlan(sp *merge.SidePlan) (string, error) {
	if err := merge.ValidatePlan(sp); err != nil {
		var be *merge.BoxError
		if errors.As(err, &be) {
			if b, _ := r.getBox(be.Box); b != nil {
				return b.Name, err
			}
		}
		return "", err
	}
	var names []string
	for _, op := range sp.Renames {
		names = append(names, op.Name)
	}
	for _, op := range sp.Creates {
		names = append(names, op.Name)
	}
	for _, a := range sp.Adopts {
		names = append(names, a.Name)
	}
	for _, n := range names {
		if _, err := r.loc.MailboxDir(n); err != nil {
			return n, err
		}
	}
	return "", nil
}

// locate finds the directory of an index mailbox, by its recorded
// directory first and by GUID when that no longer matches (a parent was
// renamed under LAYOUT=fs).
func (r *Replica) locate(b *Box) (string, error) {
	dir := filepath.Join(r.loc.Root, b.Dir)
	if ul, err := readUidlistHeader(dir); err == nil && model.MailboxGUID(ul.GUID) == b.GUID {
		return dir, nil
	}
	dirs, err := r.listDirs()
	if err != nil {
		return "", err
	}
	for _, d := range dirs {
		if ul, err := readUidlistHeader(d.Dir); err == nil && model.MailboxGUID(ul.GUID) == b.GUID {
			return d.Dir, nil
		}
	}
	return "", fs.ErrNotExist
}

func (r *Replica) getBox(g model.MailboxGUID) (*Box, error) {
	var b *Box
	err := r.store.db.View(func(tx *bolt.Tx) error {
		var err error
		b, err = getBox(tx, g)
		return err
	})
	return b, err
}

func (r *Replica) rel(dir string) string {
	rel, err := filepath.Rel(r.loc.Root, dir)
	if err != nil || rel == "." {
		return ""
	}
	return rel
}

// tmpDirFor is where a mailbox waits, renamed aside, while a chain of
// renames runs: a hidden name (maildir.HiddenPath) that Dovecot's listing
// never shows.
func (r *Replica) tmpDirFor(g model.MailboxGUID) (string, error) {
	return r.loc.HiddenPath(g.String()), nil
}

// listDirs lists the mailbox directories: those Dovecot sees, and those
// renamed aside under a hidden name.
func (r *Replica) listDirs() ([]maildir.MailboxDir, error) {
	dirs, aside, err := r.loc.ListMailboxesAndHidden()
	if err != nil {
		return nil, err
	}
	return append(dirs, aside...), nil
}

// asideMove is a rename of the plan left undone with its mailbox renamed
// aside (under its hidden name, tmp) for a target that was taken: from is
// where it was before.
type asideMove struct {
	op        merge.MailboxOp
	box       *Box
	from, tmp string
}

// applyRenames carries out the plan's renames. Those whose target was still
// taken at the end, with their mailbox renamed aside, are returned (no skip
// recorded yet): finishAside tries them again once the rest of the apply
// ran, putBack moves them back if the apply stops.
func (r *Replica) applyRenames(ctx context.Context, ops []merge.MailboxOp, res *ApplyResult) (aside []asideMove, err error) {
	type mv struct {
		op    merge.MailboxOp
		box   *Box
		dir   string
		from  string // where phase 1 found it, when it renamed it aside
		dst   string
		saved bool // not renamed: a client saves into it (skipped)
	}
	var mvs []*mv
	done := make([]bool, 0, len(ops))
	defer func() {
		if err == nil {
			return
		}
		// Stopped: what phase 1 renamed aside and no rename took since.
		for i, m := range mvs {
			if m.from != "" && !done[i] {
				aside = append(aside, asideMove{op: m.op, box: m.box, from: m.from, tmp: r.loc.HiddenPath(m.box.GUID.String())})
			}
		}
	}()
	for _, op := range ops {
		b, err := r.getBox(op.GUID)
		if err != nil {
			return nil, r.wrap(op.Name, err)
		}
		if b == nil {
			return nil, r.errf(op.Name, "rename of unknown mailbox %s", op.GUID)
		}
		dst, err := r.loc.MailboxDir(op.Name)
		if err != nil {
			return nil, r.wrap(op.Name, err)
		}
		if model.NormName(op.Name) == model.NormName(b.Name) || model.IsInbox(op.Name) || model.IsInbox(b.Name) {
			// Only the name's timestamp changes (INBOX is never renamed on
			// disk: a client's RENAME INBOX makes a new mailbox).
			err := r.store.db.Update(func(tx *bolt.Tx) error {
				b, err := getBox(tx, op.GUID)
				if err != nil || b == nil {
					return err
				}
				b.NameT = op.NameT
				return putBox(tx, b)
			})
			if err != nil {
				return nil, r.wrap(op.Name, err)
			}
			continue
		}
		mvs = append(mvs, &mv{op: op, box: b, dst: dst})
		done = append(done, false)
	}
	// Phase 1: anything whose target is taken goes to a temporary name.
	for _, m := range mvs {
		dir, err := r.locate(m.box)
		if errors.Is(err, fs.ErrNotExist) {
			m.dir = ""
			continue // vanished: the Create path or the next scan handles it
		} else if err != nil {
			return nil, r.wrap(m.box.Name, err)
		}
		m.dir = dir
		_, lerr := os.Lstat(m.dst)
		// Under LAYOUT=fs a target inside the mailbox's own directory
		// ("a" to "a/b") cannot be reached by one rename either.
		inside := strings.HasPrefix(m.dst, dir+string(filepath.Separator))
		if (lerr == nil || inside) && dir != m.dst {
			tmp, _ := r.tmpDirFor(m.box.GUID)
			if dir == tmp {
				continue // aside already (an earlier rename was skipped)
			}
			if err := r.renameLocked(ctx, dir, tmp); err != nil {
				if errors.Is(err, errSaving) {
					skip(res, "rename of %q: %v", m.box.Name, err)
					m.dir, m.saved = "", true
					continue
				}
				if dirGone(dir) {
					m.dir = ""
					continue // renamed or deleted by a client meanwhile
				}
				return nil, r.wrap(m.box.Name, fmt.Errorf("renaming aside: %w", err))
			}
			m.dir, m.from = tmp, dir
		}
	}
	// Phase 2: renames whose target is free, repeated while that frees
	// other targets. Under LAYOUT=fs a parent's rename carries its
	// children along: parents go first, and a directory found stale (it
	// moved with its parent) is looked up again by GUID; a child carried
	// to its new name has only the name left to record.
	sort.SliceStable(mvs, func(i, j int) bool { return depth(r.rel(mvs[i].dir)) < depth(r.rel(mvs[j].dir)) })
	// (done is all false still: sorting mvs needs no reordering of it.)
	fresh := func(m *mv) {
		if m.dir == "" {
			return
		}
		if ul, err := readUidlistHeader(m.dir); err == nil && model.MailboxGUID(ul.GUID) == m.box.GUID {
			return
		}
		if d, err := r.locate(m.box); err == nil {
			m.dir = d
		} else {
			m.dir = ""
		}
	}
	for progress := true; progress; {
		progress = false
		for i, m := range mvs {
			if done[i] {
				continue
			}
			if fresh(m); m.dir == "" || m.dir == m.dst {
				continue
			}
			if r.loc.IsBareParent(m.dst) {
				// The target is only the parent directory of other
				// folders (LAYOUT=fs): they move into the mailbox, which
				// then takes the parent's place, bringing them back.
				if err := r.loc.MoveChildrenInto(m.dst, m.dir); err != nil {
					r.log.Info("rename target is a parent that cannot be emptied", "mailbox", m.box.Name, "target", m.op.Name, "error", err)
				}
			}
			if _, err := os.Lstat(m.dst); err != nil {
				if err := r.renameOne(ctx, m.box, m.dir, m.dst, m.op); errors.Is(err, fs.ErrExist) {
					// A client made the target since the Lstat: the loop
					// below reports the rename as not done (exit 2).
					continue
				} else if errors.Is(err, errSaving) {
					skip(res, "rename of %q: %v", m.box.Name, err)
					m.dir, m.saved = "", true
					continue
				} else if err != nil {
					return nil, err
				}
				done[i], progress = true, true
				res.MailboxOps++
			}
		}
	}
	for i, m := range mvs {
		if done[i] || m.saved {
			continue
		}
		if fresh(m); m.dir == "" {
			skip(res, "rename of %q: directory not found", m.box.Name)
			continue
		}
		if m.dir != m.dst {
			if m.from != "" && m.dir == r.loc.HiddenPath(m.box.GUID.String()) {
				aside = append(aside, asideMove{op: m.op, box: m.box, from: m.from, tmp: m.dir})
				done[i] = true // finishAside's now
				continue
			}
			skip(res, "rename of %q to %q: the target exists", m.box.Name, m.op.Name)
			continue
		}
		if err := r.renameOne(ctx, m.box, m.dir, m.dst, m.op); err != nil {
			return nil, err
		}
		done[i] = true
		res.MailboxOps++
	}
	if r.loc.Layout == maildir.LayoutFS && len(mvs) > 0 {
		return aside, r.checkCarried(res)
	}
	return aside, nil
}

// finishAside tries the renames applyRenames left aside again, once the
// rest of the apply ran: an adopt that gives a mailbox a new name, a
// create, a delete may have freed a target that a rename waited for (a
// folder "give mailbox X ... as Work-x" leaves "Work" only in the adopts;
// property seed 8325892858487023960 left the folder that was to take
// "Work" hidden until the next sync). One whose target is still taken goes
// back to where it was, if that is free (else it stays aside: the next
// scan's bringBack or rename moves it); either way the sync ends as "run
// again".
func (r *Replica) finishAside(ctx context.Context, aside []asideMove, res *ApplyResult) error {
	renamed := false
	for _, a := range aside {
		dst, err := r.loc.MailboxDir(a.op.Name)
		if err != nil {
			return r.wrap(a.op.Name, err)
		}
		if ul, err := readUidlistHeader(a.tmp); err != nil || model.MailboxGUID(ul.GUID) != a.box.GUID {
			skip(res, "rename of %q: directory not found", a.box.Name)
			continue
		}
		if r.loc.IsBareParent(dst) {
			if err := r.loc.MoveChildrenInto(dst, a.tmp); err != nil {
				r.log.Info("rename target is a parent that cannot be emptied", "mailbox", a.box.Name, "target", a.op.Name, "error", err)
			}
		}
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			err := r.renameOne(ctx, a.box, a.tmp, dst, a.op)
			if err == nil {
				res.MailboxOps++
				renamed = true
				continue
			}
			if !errors.Is(err, fs.ErrExist) && !errors.Is(err, errSaving) {
				return err
			}
		}
		skip(res, "rename of %q to %q: the target exists", a.box.Name, a.op.Name)
		r.putBack([]asideMove{a})
	}
	if renamed && r.loc.Layout == maildir.LayoutFS {
		// Child folders inside one renamed now moved with it.
		return r.checkCarried(res)
	}
	return nil
}

// putBack moves mailboxes that an apply renamed aside back to where they
// were, when that is free: a folder is not left hidden from its user
// until the next sync. It runs also when the apply's context was
// cancelled: a rename of one's own directory is quick, and the uidlist lock
// is waited for at most a few seconds.
func (r *Replica) putBack(aside []asideMove) {
	for _, a := range aside {
		if _, err := os.Lstat(a.from); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if ul, err := readUidlistHeader(a.tmp); err != nil || model.MailboxGUID(ul.GUID) != a.box.GUID {
			continue
		}
		if err := r.loc.MkdirParents(filepath.Dir(a.from)); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.renameLocked(ctx, a.tmp, a.from)
		cancel()
		if err != nil {
			r.log.Warn("moving a mailbox back from a temporary name", "mailbox", a.box.Name, "dir", a.tmp, "error", err)
			continue
		}
		maildir.SyncDir(filepath.Dir(a.from))
	}
}

// checkCarried finds, under LAYOUT=fs, child folders that a parent's
// rename carried along although the plan did not move them (a parent
// renamed aside for a name clash, say): their directory is no longer the
// one the index records. Such a sync ends as "run again"; the next scan
// sees the child's new place as a rename and replicates it.
func (r *Replica) checkCarried(res *ApplyResult) error {
	dirs, err := r.loc.ListMailboxes()
	if err != nil {
		return r.wrap("", err)
	}
	for _, d := range dirs {
		ul, err := readUidlistHeader(d.Dir)
		if err != nil {
			continue
		}
		b, err := r.getBox(model.MailboxGUID(ul.GUID))
		if err != nil {
			return r.wrap(d.Name, err)
		}
		if b != nil && !b.Deleted && !b.Missing && b.Dir != r.rel(d.Dir) {
			skip(res, "mailbox %q moved to %q with its parent folder: the next sync records it", b.Name, d.Name)
		}
	}
	return nil
}

// depth is the number of directory levels below the first of rel.
func depth(rel string) int { return strings.Count(rel, string(filepath.Separator)) }

// renameLocked renames a mailbox directory while holding its uidlist lock,
// so that no Dovecot lock is in it as it moves (Dovecot would then fail to
// remove its lock at the old path, and the lock would sit in the moved
// folder until it goes stale); our lock moves with it and is removed at
// its new place.
func (r *Replica) renameLocked(ctx context.Context, dir, dst string) error {
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		return err
	}
	if f := busyTmp(dir, r.opt.Now(), busyRenameAge); f != "" {
		// A client is saving a message into it (Dovecot writes to tmp/
		// before it takes the uidlist lock): moving the folder now would
		// fail its APPEND. The next sync renames it.
		lk.Unlock()
		return fmt.Errorf("%w (tmp/%s)", errSaving, f)
	}
	if f := dovecotLockIn(dir, r.opt.Now(), busyRenameAge); f != "" {
		lk.Unlock()
		return fmt.Errorf("%w (%s)", errSaving, f)
	}
	ll, err := r.lockIndexLog(ctx, dir)
	if err != nil {
		lk.Unlock()
		return err
	}
	defer ll.Unlock()
	nl, err := r.lockIndexLogCreation(ctx, dir)
	if err != nil {
		lk.Unlock()
		return err
	}
	if testHookBeforeDirMove != nil {
		testHookBeforeDirMove(dir)
	}
	if err := maildir.RenameDirNoReplace(dir, dst); err != nil {
		unlockCreation(nl)
		lk.Unlock()
		return err
	}
	r.log.Debug("moved a mailbox directory", "from", dir, "to", dst)
	if nl != nil {
		nl.Moved(dst)
	}
	unlockCreation(nl)
	lk.Moved(dst)
	if testHookAfterRename != nil {
		testHookAfterRename(dst)
	}
	if err := lk.Unlock(); err != nil && !errors.Is(err, maildir.ErrLockLost) {
		return err
	} else if err != nil {
		// A client deleted or renamed the folder right after the move
		// (its lock went with it): the move is done; the next scan sees
		// the rest.
		r.log.Info("mailbox lock gone after a move", "dir", dst, "error", err)
	}
	return nil
}

// indexLogWait bounds the wait for a mailbox's Dovecot transaction log
// lock before a move: Dovecot holds it for short index changes only.
// (Tests shorten it.)
var indexLogWait = 5 * time.Second

// lockIndexLog takes Dovecot's lock on the transaction log of the mailbox
// in dir (maildir.LockIndexLog), which the caller holds the uidlist lock
// of, before it moves or removes the directory: Dovecot changes index files
// by path holding only that lock (a cache purge), and a move under it
// fails those changes. Still held after indexLogWait, it is errSaving (the
// next sync moves the folder). Dry runs take nothing.
func (r *Replica) lockIndexLog(ctx context.Context, dir string) (*maildir.IndexLogLock, error) {
	if r.opt.DryRun {
		return nil, nil
	}
	ll, err := maildir.LockIndexLog(ctx, dir, min(indexLogWait, r.opt.LockTimeout))
	if errors.Is(err, maildir.ErrLockTimeout) {
		return nil, fmt.Errorf("%w (%s locked)", errSaving, maildir.IndexLogName)
	}
	return ll, err
}

// lockIndexLogCreation takes Dovecot's dovecot.index.log.newlock in dir
// (maildir.LockIndexLogCreation), which the caller holds the uidlist lock
// of, before it moves or removes the directory: a Dovecot process making
// the folder's first transaction log holds only that lock, and a move under
// it made Dovecot log "rename(.../dovecot.index.log.newlock, ...) failed:
// No such file or directory" and leave the lock in the moved folder, where
// the next process to index it waited three minutes holding the mailbox
// list's lock (TestDovecotAloneFolderMovedWhileLogCreated in
// integration/imap). Still held after indexLogWait, it is errSaving. Dry
// runs take nothing (nil).
func (r *Replica) lockIndexLogCreation(ctx context.Context, dir string) (*maildir.Dotlock, error) {
	if r.opt.DryRun {
		return nil, nil
	}
	nl, err := maildir.LockIndexLogCreation(ctx, dir, min(indexLogWait, r.opt.LockTimeout))
	if errors.Is(err, maildir.ErrLockTimeout) {
		return nil, fmt.Errorf("%w (%s.newlock locked)", errSaving, maildir.IndexLogName)
	}
	return nl, err
}

// unlockCreation releases a lockIndexLogCreation lock (nil: nothing). It
// is gone when the directory was removed with it: that is no error.
func unlockCreation(nl *maildir.Dotlock) {
	if nl != nil {
		_ = nl.Unlock()
	}
}

// makeMailbox is maildir.Location.MakeMailbox, logged (debug) when it
// made the directory.
func (r *Replica) makeMailbox(dir string, ul *maildir.Uidlist) (bool, error) {
	made, err := r.loc.MakeMailbox(dir, ul)
	if made {
		r.log.Debug("made a mailbox directory", "dir", dir)
	}
	return made, err
}

// renameOne moves one mailbox directory and records the new name.
func (r *Replica) renameOne(ctx context.Context, box *Box, dir, dst string, op merge.MailboxOp) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dir != dst {
		if err := r.loc.MkdirParents(filepath.Dir(dst)); err != nil {
			return r.wrap(op.Name, err)
		}
		if testHookBeforeRename != nil {
			testHookBeforeRename(dst)
		}
		if err := r.renameLocked(ctx, dir, dst); err != nil {
			return r.wrap(box.Name, fmt.Errorf("renaming to %q: %w", op.Name, err))
		}
		if err := maildir.SyncDir(filepath.Dir(dst)); err != nil {
			return r.wrap(op.Name, err)
		}
		if r.loc.Layout == maildir.LayoutFS {
			// Parents that held nothing but this mailbox go with it.
			r.loc.RemoveEmptyParents(dir)
		}
	}
	err := r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, box.GUID)
		if err != nil || b == nil {
			return err
		}
		b.Name, b.NameT, b.Dir = op.Name, op.NameT, r.rel(dst)
		b.Stamp.Uidlist = 0 // re-identify on the next scan
		return putBox(tx, b)
	})
	return r.wrap(op.Name, err)
}

// applyCreate makes (or remakes) a mailbox. Its uidlist starts at first,
// the lowest UID the plan adds to it (merge.BoxPlan.FirstUID), not at the
// plan's UIDNEXT: the messages are added later (applyBox, after their
// bodies arrived), and a Dovecot that opens the mailbox in between records
// the NEXTUID it sees; a message then listed below it is to Dovecot an
// expunged one that reappeared, and it gives the file a new UID. applyBox
// raises NEXTUID to the plan's in the uidlist write that lists the
// messages. Starting at first still keeps the UIDs below it, which the peer
// may have used, from new messages if the sync stops before the adds. It
// never starts below the UIDNEXT this replica had reached under the same
// UIDVALIDITY (UIDs it used stay used, §3.1): the merge adds nothing below
// it.
func (r *Replica) applyCreate(ctx context.Context, op merge.MailboxOp, first uint32, res *ApplyResult) (func(*bolt.Tx) error, error) {
	dir, err := r.loc.MailboxDir(op.Name)
	if err != nil {
		return nil, r.wrap(op.Name, err)
	}
	old, err := r.getBox(op.GUID)
	if err != nil {
		return nil, r.wrap(op.Name, err)
	}
	if old != nil && !old.Deleted && !old.Missing {
		if d, err := r.locate(old); err == nil {
			dir = d
		}
	}
	// A new directory appears complete: with its uidlist, owned right.
	fresh := &maildir.Uidlist{Version: 3, UIDValidity: op.UIDValidity, NextUID: max(first, 1), GUID: [16]byte(op.GUID)}
	if old != nil && old.UIDValidity == op.UIDValidity {
		fresh.NextUID = max(fresh.NextUID, old.UIDNext) // UIDs it had stay used (§3.1)
	}
	if _, err := r.makeMailbox(dir, fresh); err != nil {
		return nil, r.wrap(op.Name, err)
	}
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil && dirGone(dir) {
		skip(res, "create of %q: the directory went away during the sync", op.Name)
		return nil, nil
	}
	if err != nil {
		return nil, r.wrap(op.Name, err)
	}
	defer lk.Unlock()
	ul, _, err := maildir.ReadUidlist(dir)
	switch {
	case err == nil && model.MailboxGUID(ul.GUID) != op.GUID:
		skip(res, "create of %q: the directory now holds mailbox %x", op.Name, ul.GUID)
		return nil, nil
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		next := max(first, 1)
		if old != nil && old.UIDValidity == op.UIDValidity {
			// UIDs it had stay used (§3.1). (The merge never adds below
			// them: a UID Lost with the old directory is not free.)
			next = max(next, old.UIDNext)
		}
		ul = &maildir.Uidlist{Version: 3, UIDValidity: op.UIDValidity, NextUID: next, GUID: [16]byte(op.GUID)}
		if err := maildir.WriteUidlist(dir, ul); err != nil {
			return nil, r.wrap(op.Name, err)
		}
	default:
		return nil, r.wrap(op.Name, err)
	}
	// An empty new mailbox (no records, no files, no keywords file) is
	// what the index will hold of it: it takes the stamp of now (taken
	// before the listing, so that a delivery since changes it), and
	// neither the apply nor the next scan reads it in full.
	var st Stamp
	empty := false
	if len(ul.Records) == 0 {
		at := stampClock()
		st = stampOf(dir).settled(at)
		empty = st.Keywords == -1 && dirEmpty(filepath.Join(dir, "cur")) && dirEmpty(filepath.Join(dir, "new"))
	}
	// Read now, as when each create committed on its own (a client's
	// DELETE after this point is of this life).
	revived := r.lastDelete(op.GUID)
	return func(tx *bolt.Tx) error {
		b, err := getBox(tx, op.GUID)
		if err != nil {
			return err
		}
		noRecs := b == nil || b.Missing || b.Deleted || b.UIDValidity != ul.UIDValidity
		if b == nil {
			b = &Box{Mailbox: model.Mailbox{GUID: op.GUID}}
			b.Revived = revived // new here: older DELETE records are of an earlier life
		}
		if b.Missing || b.Deleted || b.UIDValidity != ul.UIDValidity {
			bt, err := openBoxTx(tx, b)
			if err != nil {
				return err
			}
			if err := bt.resetMessages(); err != nil {
				return err
			}
			if b.UIDValidity != ul.UIDValidity {
				b.UIDNext = 0
			}
		}
		b.Name, b.NameT, b.UIDValidity, b.Dir = op.Name, op.NameT, ul.UIDValidity, r.rel(dir)
		if b.Deleted {
			b.Revived = revived
		}
		b.Deleted, b.DeletedT, b.Missing, b.MergedInto = false, 0, false, model.MailboxGUID{}
		b.UIDNext = max(b.UIDNext, ul.NextUID)
		b.Epoch = randomUint64()
		b.Stamp = Stamp{}
		if empty && noRecs {
			b.Stamp = st
		}
		return putBox(tx, b)
	}, nil
}

// reserveUIDs raises the NEXTUID of a mailbox this apply created to the
// lowest UID the plan adds to it (its UIDNEXT when it adds nothing), before
// the bodies are pulled: UIDs below it that the peer used stay unused here
// even if the sync stops before the adds (a message a client puts there
// meanwhile must not take the UID of one the peer expunged), while no add
// ever lands below a NEXTUID that Dovecot may have seen (see applyCreate).
func (r *Replica) reserveUIDs(ctx context.Context, bp *merge.BoxPlan) error {
	want := bp.UIDNext
	for _, a := range bp.Adds {
		want = min(want, a.Msg.UID)
	}
	box, err := r.getBox(bp.GUID)
	if err != nil || box == nil || box.Deleted {
		return r.wrap("", err)
	}
	dir, err := r.locate(box)
	if err != nil {
		return nil // applyBox sees why
	}
	if h, err := readUidlistHeader(dir); err != nil || h.NextUID >= want || model.MailboxGUID(h.GUID) != bp.GUID {
		return nil
	}
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		if dirGone(dir) {
			return nil
		}
		return r.wrap(box.Name, err)
	}
	defer lk.Unlock()
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil || model.MailboxGUID(ul.GUID) != bp.GUID || ul.NextUID >= want {
		return nil // gone or changed since: applyBox sees why
	}
	before := ul.NextUID
	ul.NextUID = want
	if err := maildir.WriteUidlist(dir, ul); err != nil {
		return r.wrap(box.Name, err)
	}
	// The index follows, unless Dovecot gave out UIDs since the scan
	// (NEXTUID above the index's before ours): applyBox tells those apart
	// by the index's UIDNEXT.
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, bp.GUID)
		if err != nil || b == nil {
			return err
		}
		if b.UIDValidity == ul.UIDValidity && b.UIDNext >= before && b.UIDNext < want {
			b.UIDNext = want
			return putBox(tx, b)
		}
		return nil
	})
	return r.wrap(box.Name, err)
}

// applyAdoptDir puts the adopting mailbox's directory at its final name;
// applyBox then rewrites its identity.
func (r *Replica) applyAdoptDir(ctx context.Context, a merge.Adopt, next uint32, res *ApplyResult) (bool, error) {
	b, err := r.getBox(a.From)
	if err != nil {
		return false, r.wrap(a.Name, err)
	}
	if b == nil {
		return false, r.errf(a.Name, "merge of unknown mailbox %s", a.From)
	}
	dst, err := r.loc.MailboxDir(a.Name)
	if err != nil {
		return false, r.wrap(a.Name, err)
	}
	if testHookBeforeAdopt != nil {
		testHookBeforeAdopt(dst)
	}
	dir, err := r.locate(b)
	if errors.Is(err, fs.ErrNotExist) && b.Missing {
		// The directory vanished (rm -rf) and nothing of it is left to
		// move: the merged mailbox is made at its final name, and applyBox
		// fills it.
		dir = filepath.Join(r.loc.Root, b.Dir)
		if _, err := os.Lstat(dst); err != nil || isEmptyMailboxDir(dst) {
			dir = dst
		}
		var ul *maildir.Uidlist
		if b.UIDValidity != 0 {
			ul = &maildir.Uidlist{Version: 3, UIDValidity: b.UIDValidity, NextUID: max(1, b.UIDNext), GUID: [16]byte(b.GUID)}
		}
		if _, err := r.makeMailbox(dir, ul); err != nil {
			return false, r.wrap(a.Name, err)
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		// Deleted (by a client through Dovecot) since the scan.
		skip(res, "merge of %q into %q: the mailbox went away during the sync", b.Name, a.Name)
		return false, nil
	} else if err != nil {
		return false, r.wrap(b.Name, fmt.Errorf("locating mailbox to merge: %w", err))
	}
	inUse := false
	if dir != dst && !model.IsInbox(b.Name) {
		if _, err := os.Lstat(dst); err == nil {
			// A leftover directory may sit there; a folder a client made
			// since the scan is in use.
			gone, err := r.removeLeftover(ctx, dst)
			if err != nil {
				return false, r.wrap(a.Name, err)
			}
			if inUse = !gone; inUse {
				skip(res, "merge of %q into %q: target directory in use", b.Name, a.Name)
			}
		}
	}
	if dir != dst && !model.IsInbox(b.Name) && !inUse {
		// Its parents first (LAYOUT=fs: "a" -> "Archive/2024" needs
		// "Archive"), as for a plain rename.
		if err := r.loc.MkdirParents(filepath.Dir(dst)); err != nil {
			return false, r.wrap(a.Name, err)
		}
		if err := r.renameLocked(ctx, dir, dst); err != nil {
			if errors.Is(err, errSaving) {
				skip(res, "merge of %q into %q: %v", b.Name, a.Name, err)
				return false, nil
			}
			switch {
			case errors.Is(err, fs.ErrExist):
				// A client made the target (CREATE, RENAME) since the
				// check above: as when it was in use then (merged where
				// it is, with the journal below).
				skip(res, "merge of %q into %q: target directory in use", b.Name, a.Name)
				inUse = true
			case dirGone(dir):
				skip(res, "merge of %q into %q: the mailbox went away during the sync", b.Name, a.Name)
				return false, nil
			default:
				return false, r.wrap(b.Name, err)
			}
		} else {
			dir = dst
		}
	}
	// With the directory's place, the journal of what applyBox is about
	// to write into its uidlist (adopt.go): a kill between that write and
	// the index commit is completed by the next scan.
	revived := r.lastDelete(a.To)
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, a.From)
		if err != nil || b == nil {
			return err
		}
		b.Dir = r.rel(dir)
		if err := journalAdopt(tx, a, b.Dir, revived, next); err != nil {
			return err
		}
		return putBox(tx, b)
	})
	if inUse {
		return err == nil, r.wrap(a.Name, err) // merged where it is
	}
	res.MailboxOps++
	return err == nil, r.wrap(a.Name, err)
}

// removeLeftover removes dir, the target of a merge's move, if it is a
// leftover that holds no mailbox: empty, without cur/ (a directory with
// cur/ is a mailbox to the scan and to Dovecot: a client's CREATE makes
// one, empty, that its clients may be using), no save in its tmp/, no
// Dovecot lock in it, and unchanged for busyRenameAge (a CREATE in
// progress makes the directory before its subdirectories). It looks and
// removes holding dir's uidlist lock, and removes as Dovecot's DELETE
// does. It reports whether dir is gone; if not, the merge waits for the
// next sync, which sees a folder made there as a mailbox of its own.
func (r *Replica) removeLeftover(ctx context.Context, dir string) (bool, error) {
	leftover := func() bool {
		now := r.opt.Now()
		if !isEmptyMailboxDir(dir) || busyTmp(dir, now, busyRenameAge) != "" || dovecotLockIn(dir, now, busyRenameAge) != "" {
			return false
		}
		if fi, err := os.Stat(filepath.Join(dir, "cur")); err == nil && fi.IsDir() {
			return false
		}
		fi, err := os.Stat(dir)
		return err == nil && now.Sub(fi.ModTime()) >= busyRenameAge
	}
	if !leftover() {
		return dirGone(dir), nil
	}
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		if dirGone(dir) {
			return true, nil
		}
		return false, err
	}
	if !leftover() {
		lk.Unlock()
		return dirGone(dir), nil
	}
	r.log.Debug("removing a leftover directory at a merge's target", "dir", dir)
	if err := r.loc.RemoveMailboxDir(dir, lk.Moved); err != nil {
		lk.Unlock()
		if dirGone(dir) {
			return true, nil
		}
		return false, err
	}
	_ = lk.Unlock() // (removed with the directory)
	return true, nil
}

func isEmptyMailboxDir(dir string) bool {
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err == nil && len(ents) > 0 {
			return false
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != "cur" && e.Name() != "new" && e.Name() != "tmp" {
			return false
		}
	}
	return true
}

// prepareBodies gets every added message's body into tmp/ of its mailbox,
// durable, and returns the temporary paths in plan order ("" for adds
// that could not be had).
//
// The files of mailbox box of the apply's plan come from pre when it made
// them (precreator; sp is then that one mailbox's plan). With pulled, sp's
// adds were pulled from the peer after recordTmpDirs (whose commit
// journaled the Born stamps of the adds the plan carried): they are
// journaled before any body is written.
func (r *Replica) prepareBodies(ctx context.Context, sp *merge.SidePlan, src replica.BodySource, res *ApplyResult, prog Progress, pre *precreator, box int, pulled bool) ([]string, error) {
	var total int
	for _, bp := range sp.Boxes {
		total += len(bp.Adds)
	}
	paths := make([]string, total)
	if total == 0 {
		return paths, nil
	}
	perFile := total <= perFileSyncMax
	var refs []replica.BodyRef
	var refIdx []int
	var want []string
	var dirs []string
	k := 0
	err := r.store.db.View(func(tx *bolt.Tx) error {
		for _, bp := range sp.Boxes {
			dir, err := r.boxDirForPlan(tx, sp, bp.GUID)
			if err != nil {
				return err
			}
			dirs = append(dirs, dir)
			for _, add := range bp.Adds {
				tmp := filepath.Join(dir, "tmp", fmt.Sprintf("twinbox.%d.%d.%s", time.Now().UnixNano(), tmpSeq.Add(1), r.opt.Hostname))
				if local := r.localFile(tx, add.Msg.GUID, bp.GUID, add.Msg.Size); local != "" {
					if err := linkOrCopy(local, tmp); err == nil {
						paths[k] = tmp
						res.Linked++
						k++
						continue
					}
				}
				refs = append(refs, replica.BodyRef{Box: add.SourceBox, UID: add.SourceUID, GUID: add.Msg.GUID, Size: add.Msg.Size})
				refIdx = append(refIdx, k)
				want = append(want, tmp)
				k++
			}
		}
		return nil
	})
	if err != nil {
		return paths, r.wrap("", err)
	}
	var made *preBox
	if len(dirs) == 1 {
		made = pre.box(box, dirs[0])
	}
	var more []string // not recorded yet (recordTmpDirs)
	for _, d := range dirs {
		if !r.tmpRecorded[d] {
			more = append(more, d)
		}
	}
	if len(more) > 0 {
		// Recorded with those already recorded (their temporary files
		// may be gone by now: naming them again costs nothing).
		rec := append([]string(nil), more...)
		for d := range r.tmpRecorded {
			rec = append(rec, d)
		}
		sort.Strings(rec)
		if err := r.setDirtyTmp(rec, sp); err != nil {
			return paths, err
		}
		if r.tmpRecorded == nil {
			r.tmpRecorded = map[string]bool{}
		}
		for _, d := range more {
			r.tmpRecorded[d] = true
		}
	} else if pulled {
		if err := r.store.db.Update(func(tx *bolt.Tx) error { return journalBorns(tx, sp) }); err != nil {
			return paths, r.wrap("", err)
		}
	}
	if len(refs) > 0 {
		if src == nil {
			return paths, r.errf("", "%d message bodies needed and no peer to fetch them from", len(refs))
		}
		got := make([]bool, len(refs))
		owners := map[string]*maildir.Owner{} // by mailbox directory
		err := src.Fetch(ctx, refs, func(i int, rd io.Reader) error {
			if i < 0 || i >= len(refs) {
				return fmt.Errorf("peer sent body %d of %d", i, len(refs))
			}
			if got[i] {
				return fmt.Errorf("peer sent body %d twice", i)
			}
			got[i] = true
			// want[i] is <mailbox>/tmp/<name>: the file belongs to the
			// mailbox's owner.
			mdir := filepath.Dir(filepath.Dir(want[i]))
			own, ok := owners[mdir]
			if !ok {
				o, err := maildir.OwnerOf(mdir)
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return r.wrap("", err)
				}
				own, owners[mdir] = o, o
			}
			var n int64
			var err error
			if p, ok := pre.take(made); ok {
				want[i] = p
				var f *os.File
				if f, err = openMade(p); err == nil {
					n, err = writeBodyTo(f, rd, perFile)
				}
			} else {
				n, err = writeBodyAs(want[i], rd, perFile, own)
			}
			if err != nil && errors.Is(err, fs.ErrNotExist) && dirGone(filepath.Dir(want[i])) {
				// Its folder went away (a client deleted or renamed it)
				// while the bodies streamed: the stream goes on, this body
				// waits for the next sync.
				_, _ = io.Copy(io.Discard, rd)
				skip(res, "message %s: its folder went away during the sync", refs[i].GUID)
				return nil
			}
			if err != nil {
				os.Remove(want[i])
				return r.wrap("", fmt.Errorf("writing message %s: %w", refs[i].GUID, err))
			}
			if n != refs[i].Size {
				os.Remove(want[i])
				skip(res, "message %s: peer sent %d bytes, expected %d", refs[i].GUID, n, refs[i].Size)
				return nil
			}
			paths[refIdx[i]] = want[i]
			res.Fetched++
			res.Bytes += n
			if prog != nil {
				prog.Add(1, n)
			}
			return nil
		})
		if err != nil {
			return paths, err
		}
		for i, ok := range got {
			if !ok {
				// The peer could not send it (gone or changed since its
				// scan): the next sync must try again, so this one may not
				// record its state.
				skip(res, "message %s: the peer could not send its body", refs[i].GUID)
			}
		}
	}
	// Step 1 of the durability order: every body on disk before any rename.
	// A large batch is flushed with one syncfs; a small one was fsynced
	// file by file (syncfs would also wait for everyone else's dirty data).
	if !perFile {
		if err := syncfs(r.loc.Root); err != nil {
			return paths, r.wrap("", fmt.Errorf("flushing message bodies: %w", err))
		}
	}
	return paths, nil
}

// writeBody writes one body to a new file; with sync it is made durable
// on its own (small batches), else the caller flushes the batch.
func writeBody(path string, rd io.Reader, sync bool) (int64, error) {
	// path is <mailbox>/tmp/<name>: the file belongs to the mailbox's owner.
	own, err := maildir.OwnerOf(filepath.Dir(filepath.Dir(path)))
	if err != nil {
		return 0, err
	}
	return writeBodyAs(path, rd, sync, own)
}

// bodyBufs are the copy buffers of writeBodyAs: a first sync writes
// thousands of bodies, and io.Copy would allocate (and clear) 32 KiB for
// each.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeBodyAs is writeBody with the owner to give the file (nil: leave it).
func writeBodyAs(path string, rd io.Reader, sync bool, own *maildir.Owner) (int64, error) {
	// Opened with open(2) and os.NewFile: os.OpenFile would also try to
	// register the regular file with the network poller (two failing
	// system calls more per body).
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if own != nil {
		if err := f.Chown(own.UID, own.GID); err != nil {
			f.Close()
			return 0, err
		}
	}
	return writeBodyTo(f, rd, sync)
}

// writeBodyTo writes one body into f and closes it (after an fsync with
// sync).
func writeBodyTo(f *os.File, rd io.Reader, sync bool) (int64, error) {
	var n int64
	var err error
	if _, isFile := rd.(*os.File); isFile {
		n, err = io.Copy(f, rd) // copy_file_range where it can
	} else {
		bp := bodyBufs.Get().(*[]byte)
		n, err = io.CopyBuffer(struct{ io.Writer }{f}, rd, *bp)
		bodyBufs.Put(bp)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func syncfs(root string) error {
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if _, err := writeBody(dst, in, true); err != nil {
		os.Remove(dst)
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

// localFile finds a file of this replica holding message GUID g, of the
// given size, preferring mailbox prefer. Only a file whose base name is the
// one the index recorded for the message counts: a record that names
// another message's file (an index out of step with the disk) must never
// lend that body to g; the body is then fetched from the peer instead.
func (r *Replica) localFile(tx *bolt.Tx, g string, prefer model.MailboxGUID, size int64) string {
	hits := findGUID(tx, g)
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].Box == prefer && hits[j].Box != prefer })
	for _, h := range hits {
		b, err := getBox(tx, h.Box)
		if err != nil || b == nil || b.Deleted || b.Missing {
			continue
		}
		bt, err := buckets(tx, h.Box, false)
		if err != nil || bt == nil {
			continue
		}
		v := bt.uid.Get(u32(h.UID))
		if v == nil {
			continue
		}
		m, err := decodeMsg(v)
		if err != nil || m.Held || m.GUID != g {
			continue
		}
		if !m.fileOK() {
			r.log.Warn("index record names another message's file; not using it", "mailbox", b.Name, "uid", m.UID, "guid", m.GUID, "file", m.File)
			continue
		}
		dir := filepath.Join(r.loc.Root, b.Dir)
		p := filepath.Join(dir, subdir(m.New), m.File)
		if _, err := os.Stat(p); err != nil {
			if p = findByBase(dir, m.fileBase()); p == "" {
				continue
			}
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != size {
			continue
		}
		return p
	}
	return ""
}

// findByBase looks for a message file by base name in cur/ and new/.
func findByBase(dir, base string) string {
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if baseOf(e.Name()) == base {
				return filepath.Join(dir, sub, e.Name())
			}
		}
	}
	return ""
}

// boxDirForPlan returns the directory a BoxPlan's mailbox lives in now.
func (r *Replica) boxDirForPlan(tx *bolt.Tx, sp *merge.SidePlan, g model.MailboxGUID) (string, error) {
	var b *Box
	for _, a := range sp.Adopts {
		if a.To == g {
			if b, _ = getBox(tx, a.From); b == nil {
				return "", fmt.Errorf("mailbox %s to merge not in the index", a.From)
			}
		}
	}
	if b == nil {
		var err error
		if b, err = getBox(tx, g); err != nil {
			return "", err
		}
		if b == nil {
			return "", fmt.Errorf("mailbox %s not in the index", g)
		}
	}
	dir := filepath.Join(r.loc.Root, b.Dir)
	if d, err := r.locate(b); err == nil {
		dir = d // where the mailbox really is now
	}
	// A mailbox made by something other than an MTA may lack tmp/.
	if _, err := os.Stat(filepath.Join(dir, "tmp")); err != nil {
		var ul *maildir.Uidlist
		if dirGone(dir) {
			if b.Deleted || r.deletedInLog(b) {
				// Deleted by a client since the scan: not made again.
				return "", fmt.Errorf("mailbox %q: %w (deleted during the sync)", b.Name, fs.ErrNotExist)
			}
			// Vanished since the scan: made again, whole (as applyBox
			// would), so that Dovecot never sees it without its identity.
			ul = &maildir.Uidlist{Version: 3, UIDValidity: b.UIDValidity, NextUID: max(1, b.UIDNext), GUID: [16]byte(b.GUID)}
		}
		if _, err := r.makeMailbox(dir, ul); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// recordTmpDirs records, in one commit, the directories of every mailbox
// of the plan that gets messages (as they are now: a directory
// prepareBodies finds elsewhere is added then), instead of one commit per
// mailbox as its bodies begin (a first sync of 40 mailboxes made 40).
// Recording more directories than hold temporary files costs nothing: a
// crash's cleanup looks in each.
func (r *Replica) recordTmpDirs(sp *merge.SidePlan, adopts map[model.MailboxGUID]merge.Adopt) error {
	var dirs []string
	seen := map[string]bool{}
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		for i := range sp.Boxes {
			bp := &sp.Boxes[i]
			if bp.AddCount == 0 && len(bp.Adds) == 0 {
				continue
			}
			g := bp.GUID
			if a, ok := adopts[bp.GUID]; ok {
				g = a.From // its directory, as boxDirForPlan finds it
			}
			b, err := getBox(tx, g)
			if err != nil || b == nil {
				continue
			}
			dir := filepath.Join(r.loc.Root, b.Dir)
			if d, err := r.locate(b); err == nil {
				dir = d
			}
			if !seen[dir] {
				seen[dir] = true
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	if len(dirs) < 2 {
		return nil // one mailbox: prepareBodies records it, as before
	}
	if err := r.setDirtyTmp(dirs, sp); err != nil {
		return err
	}
	r.tmpRecorded = seen
	return nil
}

// setDirtyTmp records which tmp/ directories may hold this process's
// temporary files, so that a crash leaves nothing behind for long, and in
// the same commit the Born stamps of sp's adds (journalBorns: a record a
// killed apply linked keeps its Born).
func (r *Replica) setDirtyTmp(dirs []string, sp *merge.SidePlan) error {
	if len(dirs) == 0 {
		dirty := false
		_ = r.store.db.View(func(tx *bolt.Tx) error {
			dirty = tx.Bucket(bMeta).Get([]byte("dirty_tmp")) != nil
			return nil
		})
		if !dirty {
			return nil
		}
	}
	mark := len(dirs) > 0 && r.inApply && !r.applyMarked
	err := r.store.db.Update(func(tx *bolt.Tx) error {
		if len(dirs) == 0 {
			return tx.Bucket(bMeta).Delete([]byte("dirty_tmp"))
		}
		if mark {
			if err := tx.Bucket(bMeta).Put([]byte("dirty_apply"), []byte{1}); err != nil {
				return err
			}
		}
		if err := journalBorns(tx, sp); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put([]byte("dirty_tmp"), []byte(strings.Join(dirs, "\x00")))
	})
	if err == nil && mark {
		r.applyMarked = true
	}
	return err
}

// markApplying commits the running apply's dirty_apply mark, once.
func (r *Replica) markApplying() error {
	if r.applyMarked {
		return nil
	}
	if err := r.setApplying(true); err != nil {
		return err
	}
	r.applyMarked = true
	return nil
}

// cleanTmp removes temporary files an interrupted apply left.
func (r *Replica) cleanTmp() error {
	var dirs []string
	if err := r.store.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bMeta).Get([]byte("dirty_tmp")); v != nil {
			dirs = strings.Split(string(v), "\x00")
		}
		return nil
	}); err != nil {
		return r.wrap("", err)
	}
	var interrupted bool
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		interrupted = tx.Bucket(bMeta).Get([]byte("dirty_apply")) != nil
		return nil
	})
	if interrupted {
		// An apply was killed: temporary files of atomic writes may be
		// left in any mailbox it touched. Holding the replica's lock, every
		// such file of ours is an orphan (Dovecot never uses these names).
		if all, err := r.loc.ListMailboxes(); err == nil {
			for _, m := range all {
				dirs = append(dirs, m.Dir)
				removeOrphanTemps(m.Dir)
				if maildir.BreakOrphanIndexLogCreationLock(m.Dir) {
					r.log.Info("removed a dotlock left by a killed twinbox", "dir", m.Dir)
				}
			}
		}
		removeOrphanTemps(r.loc.Root)
	}
	for _, d := range dirs {
		if !strings.HasPrefix(d, r.loc.Root) {
			continue
		}
		ents, _ := os.ReadDir(filepath.Join(d, "tmp"))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "twinbox.") {
				os.Remove(filepath.Join(d, "tmp", e.Name()))
			}
		}
	}
	if len(dirs) > 0 {
		if err := r.setDirtyTmp(nil, nil); err != nil {
			return err
		}
	}
	if interrupted {
		return r.setApplying(false)
	}
	return nil
}

// removeOrphanTemps removes the temporary files twinbox's atomic writes and
// dotlocks leave when killed mid-write.
//
// The directory is read once for all the patterns: it is the mailbox's
// (for INBOX the mail root's) and this runs each time a mailbox is locked.
func removeOrphanTemps(dir string) {
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, n := range names {
		for _, pat := range orphanTempPatterns {
			if ok, _ := filepath.Match(pat, n); ok {
				os.Remove(filepath.Join(dir, n))
				break
			}
		}
	}
}

var orphanTempPatterns = [...]string{".dovecot-uidlist.tmp*", ".dovecot-keywords.tmp*", "dovecot-uidlist.lock.tmp*", "dovecot.index.log.newlock.tmp*", ".subscriptions.tmp*", "subscriptions.lock.tmp*"}

// setApplying records that an apply is under way (so that a kill is
// noticed at the next open) or that it ended.
func (r *Replica) setApplying(on bool) error {
	return r.store.db.Update(func(tx *bolt.Tx) error {
		if on {
			return tx.Bucket(bMeta).Put([]byte("dirty_apply"), []byte{1})
		}
		return tx.Bucket(bMeta).Delete([]byte("dirty_apply"))
	})
}

// keepFirst returns err, with also when that failed too.
func keepFirst(err, also error) error {
	if also == nil {
		return err
	}
	return errors.Join(err, also)
}

// raiseUIDValidity raises the root's UIDVALIDITY counter to the plan's
// floor and past every UIDVALIDITY the plan gives a mailbox here. A counter
// that cannot be written is a warning: the mail still syncs, but this
// host's Dovecot may later give a new mailbox a value one of these had.
func (r *Replica) raiseUIDValidity(sp *merge.SidePlan) {
	v := sp.UIDValidityFloor
	for _, c := range sp.Creates {
		v = max(v, c.UIDValidity)
	}
	for _, a := range sp.Adopts {
		v = max(v, a.UIDValidity)
	}
	if v == 0 || r.opt.DryRun {
		return
	}
	if err := r.loc.RaiseUIDValidity(v); err != nil {
		r.log.Warn("UIDVALIDITY counter not raised: Dovecot may give a later mailbox a value already used", "err", err)
	}
}

// planCreates reports whether the plan makes mailbox g (so that its box
// may be missing from the index only because that create was skipped).
func planCreates(sp *merge.SidePlan, g model.MailboxGUID) bool {
	for _, c := range sp.Creates {
		if c.GUID == g {
			return true
		}
	}
	for _, a := range sp.Adopts {
		if a.To == g {
			return true
		}
	}
	return false
}

// dirEmpty reports whether dir exists and holds no entries.
func dirEmpty(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	return len(names) == 0 && err == io.EOF
}
