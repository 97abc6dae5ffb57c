package index

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

// precreateMin is the least number of bodies a mailbox must expect for its
// temporary files to be made ahead (the batches flushed by one syncfs).
var precreateMin = perFileSyncMax + 1

// precreatedUsed counts the files made ahead that took a body (tests).
var precreatedUsed atomic.Int64

// precreator makes the temporary body files of the mailboxes an apply
// fills with many bodies, up to one mailbox ahead of the bodies: empty
// files with the names and owner prepareBodies would give them, made with
// O_EXCL in the mailbox's tmp/. Creating a file is most of a first sync's
// time on the receiving side (inode allocation; on ext4 without a journal
// also a walk over the inodes deleted in the last minute, for every
// create), and creates serialise on their directory. Each mailbox's files
// are made by a goroutine of its own: the next mailbox's come while the
// current one's bodies are written, flushed (syncfs) and applied
// (applyBox) on the apply's goroutine, which then only opens them, and
// while the current one's files are still being made (another
// directory). Nothing else changes: the bodies still go through tmp/ and
// are durable before they are renamed, and the directories are in
// dirty_tmp before the first file is made (the precreator only serves
// mailboxes recordTmpDirs recorded), so a kill leaves nothing the next
// open does not remove. Files made and not used (fewer bodies came than
// expected) are removed.
type precreator struct {
	mu     sync.Mutex
	cond   *sync.Cond
	boxes  []*preBox       // in plan order
	byBox  map[int]*preBox // by plan box index
	cur    int             // the plan box the apply has reached
	closed bool
	wg     sync.WaitGroup
	host   string
}

// preBox is one mailbox's files.
type preBox struct {
	at   int       // plan box index
	dir  string    // mailbox directory
	n    int       // bodies expected
	made []preName // in the order made
	next int       // made[:next] were handed out
	// started: the goroutine began on it; done: it made all it will.
	started, done, cancel bool
}

// preName is a made file's name: twinbox.<ns>.<seq>.<host> (kept as two
// numbers: a 50k first sync's largest mailboxes hold 10k each).
type preName struct {
	ns  int64
	seq uint64
}

func (p *precreator) path(b *preBox, n preName) string {
	return filepath.Join(b.dir, "tmp", fmt.Sprintf("twinbox.%d.%d.%s", n.ns, n.seq, p.host))
}

// preTarget is a mailbox to make files for.
type preTarget struct {
	at  int
	dir string
	n   int
}

// startPrecreator starts making files for targets (in plan order); nil
// when there is nothing to make.
func startPrecreator(targets []preTarget, host string) *precreator {
	if len(targets) == 0 {
		return nil
	}
	p := &precreator{byBox: map[int]*preBox{}, cur: -1, host: host}
	p.cond = sync.NewCond(&p.mu)
	for _, t := range targets {
		b := &preBox{at: t.at, dir: t.dir, n: t.n}
		p.boxes = append(p.boxes, b)
		p.byBox[t.at] = b
	}
	p.wg.Add(len(p.boxes))
	for j := range p.boxes {
		go p.make(j)
	}
	return p
}

// make makes the files of p.boxes[j] on a goroutine of its own: the next
// mailbox's files may be made while the current one's still are (in
// another directory: creates in one directory serialise on it), never
// more than one mailbox ahead of the apply.
func (p *precreator) make(j int) {
	defer p.wg.Done()
	b := p.boxes[j]
	p.mu.Lock()
	for !p.closed && !b.cancel && j > 0 && p.cur < p.boxes[j-1].at {
		p.cond.Wait()
	}
	if p.closed || b.cancel {
		b.done = true
		p.cond.Broadcast()
		p.mu.Unlock()
		return
	}
	b.started = true
	p.mu.Unlock()
	own, err := maildir.OwnerOf(b.dir)
	for k := 0; k < b.n && err == nil; k++ {
		p.mu.Lock()
		stop := p.closed || b.cancel
		p.mu.Unlock()
		if stop {
			break
		}
		name := preName{time.Now().UnixNano(), tmpSeq.Add(1)}
		if err = createEmpty(p.path(b, name), own); err != nil {
			break // the apply's goroutine makes the rest itself
		}
		p.mu.Lock()
		b.made = append(b.made, name)
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	p.mu.Lock()
	b.done = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// createEmpty makes a new empty file at path, owned by own (nil: as
// made).
func createEmpty(path string, own *maildir.Owner) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if own != nil {
		if err := unix.Fchown(fd, own.UID, own.GID); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return &fs.PathError{Op: "chown", Path: path, Err: err}
		}
	}
	if err := unix.Close(fd); err != nil {
		os.Remove(path)
		return &fs.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// reach tells the precreator that the apply is at plan box i.
//
// Mailboxes before i that it still makes files for were passed over (their
// files are removed at close).
func (p *precreator) reach(i int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	for _, b := range p.boxes {
		if b.at < i {
			b.cancel = true
		}
	}
	p.cur = i
	p.cond.Broadcast()
	p.mu.Unlock()
}

// box returns plan box i's files, if the precreator makes any, in dir.
// A mailbox found elsewhere than the precreator was told gets none.
func (p *precreator) box(i int, dir string) *preBox {
	if p == nil {
		return nil
	}
	b := p.byBox[i]
	if b == nil {
		return nil
	}
	if b.dir != dir {
		p.finish(i)
		return nil
	}
	return b
}

// take hands out the next file of b, waiting for it to be made; false when
// no more will be.
func (p *precreator) take(b *preBox) (string, bool) {
	if p == nil || b == nil {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for b.next >= len(b.made) && !b.done && !b.cancel && !p.closed {
		p.cond.Wait()
	}
	if b.next < len(b.made) && !b.cancel && !p.closed {
		b.next++
		precreatedUsed.Add(1)
		return p.path(b, b.made[b.next-1]), true
	}
	return "", false
}

// finish stops making files for plan box i and removes those not handed
// out.
func (p *precreator) finish(i int) {
	if p == nil {
		return
	}
	b := p.byBox[i]
	if b == nil {
		return
	}
	p.mu.Lock()
	b.cancel = true
	p.cond.Broadcast()
	for b.started && !b.done {
		p.cond.Wait()
	}
	left := b.made[b.next:]
	b.made, b.next = nil, 0
	p.mu.Unlock()
	for _, n := range left {
		os.Remove(p.path(b, n))
	}
}

// close stops the precreator and removes every file it made that was not
// handed out.
func (p *precreator) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
	for _, b := range p.boxes {
		for _, n := range b.made[b.next:] {
			os.Remove(p.path(b, n))
		}
		b.made, b.next = nil, 0
	}
}

// openMade opens a file the precreator made, for writing a body into it.
func openMade(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		f.Close()
		if err == nil {
			err = errors.New("not the empty file made for it")
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// precreateTargets lists the mailboxes of sp whose files are made ahead:
// those that expect at least precreateMin bodies and hold no messages here
// (a first sync's, an adopted empty INBOX included), whose directory
// recordTmpDirs recorded. Adds into a
// mailbox that holds messages are often copies or moves of messages this
// replica has (linked, not fetched): files made for them would only be
// removed again.
func (r *Replica) precreateTargets(sp *merge.SidePlan, adopts map[model.MailboxGUID]merge.Adopt) []preTarget {
	var out []preTarget
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		for i := range sp.Boxes {
			bp := &sp.Boxes[i]
			n := len(bp.Adds)
			if n == 0 {
				n = bp.AddCount
			}
			if n < precreateMin || bp.Reset {
				continue
			}
			g := bp.GUID
			if a, ok := adopts[bp.GUID]; ok {
				g = a.From // its directory (an empty INBOX a first sync adopts, say)
			}
			b, err := getBox(tx, g)
			if err != nil || b == nil || b.Deleted || b.Missing || b.Messages != 0 || b.Held != 0 {
				continue
			}
			dir := filepath.Join(r.loc.Root, b.Dir)
			if d, err := r.locate(b); err == nil {
				dir = d
			}
			if !r.tmpRecorded[dir] {
				continue
			}
			out = append(out, preTarget{at: i, dir: dir, n: n})
		}
		return nil
	})
	return out
}
