package index

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

var _ replica.Replica = (*Replica)(nil)

// Info identifies this replica.
func (r *Replica) Info() replica.Info {
	id := r.opt.ReplicaID
	if id == "" {
		// Ad-hoc roots: the index's own identity tells replicas apart,
		// also two roots on one host.
		id = "index-" + r.store.IndexID()
	}
	return replica.Info{ReplicaID: id, IndexID: r.store.IndexID(), User: r.opt.User, Root: r.loc.Root}
}

func pairKey(p replica.Info) string { return p.ReplicaID }

// Begin scans and describes the replica.
func (r *Replica) Begin(ctx context.Context, req replica.BeginRequest) (*replica.BeginReply, error) {
	if req.AllowMassExpunge {
		r.opt.AllowMassExpunge = true
	}
	rep := &replica.BeginReply{Info: r.Info()}
	res, err := r.Scan(ctx)
	if err != nil {
		return nil, err
	}
	rep.Held = res.Held
	if rep.UIDValidity, err = r.loc.UIDValidityCounter(); err != nil {
		// The peer then takes this side's counter for 0: a UIDVALIDITY
		// the plan makes up may be at or below it (a warning, not a
		// reason to stop syncing mail).
		r.log.Warn("reading the UIDVALIDITY counter", "err", err)
	}
	// The scan's last read of the mailbox records came after its last
	// write, and nothing writes between it and here (the replica's lock
	// is held): the records are the ones a read now would decode.
	if len(res.boxes) > 0 {
		rep.Mailboxes = make([]model.Mailbox, 0, len(res.boxes))
	}
	for _, b := range res.boxes {
		rep.Mailboxes = append(rep.Mailboxes, b.Mailbox)
	}
	err = r.store.db.View(func(tx *bolt.Tx) error {
		var err error
		if rep.Subs, err = loadSubs(tx); err != nil {
			return err
		}
		if req.Peer.ReplicaID != "" {
			rep.Pair, err = getPair(tx, pairKey(req.Peer))
		}
		return err
	})
	if err != nil {
		return nil, r.wrap("", err)
	}
	return rep, nil
}

// Changes returns the records of the asked mailboxes changed after Since.
func (r *Replica) Changes(ctx context.Context, req replica.ChangesRequest) (map[model.MailboxGUID]*merge.Contents, error) {
	out := map[model.MailboxGUID]*merge.Contents{}
	fc := flagCache{}
	err := r.store.db.View(func(tx *bolt.Tx) error {
		for _, bs := range req.Boxes {
			if err := ctx.Err(); err != nil {
				return err
			}
			b, err := getBox(tx, bs.GUID)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			c := &merge.Contents{}
			out[bs.GUID] = c
			bb, err := buckets(tx, bs.GUID, false)
			if err != nil || bb == nil {
				continue
			}
			if bs.Since == 0 {
				if err := bb.uid.ForEach(func(k, v []byte) error {
					m, err := decodeMsgShared(v, fc)
					if err != nil {
						return err
					}
					c.Messages = append(c.Messages, m.Message)
					return nil
				}); err != nil {
					return fmt.Errorf("mailbox %q: %w", b.Name, err)
				}
				if c.Tombstones, err = loadTombs(tx, bs.GUID); err != nil {
					return err
				}
				continue
			}
			cur := bb.mod.Cursor()
			for k, v := cur.Seek(u64(bs.Since + 1)); k != nil; k, v = cur.Next() {
				mv := bb.uid.Get(v)
				if mv == nil {
					continue
				}
				m, err := decodeMsg(mv)
				if err != nil {
					return fmt.Errorf("mailbox %q UID %d: %w", b.Name, binary.BigEndian.Uint32(v), err)
				}
				c.Messages = append(c.Messages, m.Message)
			}
			tc := bb.tmod.Cursor()
			tombSeen := map[uint32]bool{}
			for k, v := tc.Seek(u64(bs.Since + 1)); k != nil; k, v = tc.Next() {
				tv := bb.tomb.Get(v)
				if tv == nil {
					continue
				}
				// An index written before put() cleaned up after itself
				// can hold a stale modseq entry for a UID: report each
				// tombstone once.
				if u := binary.BigEndian.Uint32(v); tombSeen[u] {
					continue
				} else {
					tombSeen[u] = true
				}
				var t model.Tombstone
				if err := json.Unmarshal(tv, &t); err != nil {
					return fmt.Errorf("mailbox %q tombstone: %w", b.Name, err)
				}
				c.Tombstones = append(c.Tombstones, t)
			}
		}
		for _, lk := range req.Lookup {
			if err := ctx.Err(); err != nil {
				return err
			}
			b, err := getBox(tx, lk.GUID)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			c := out[lk.GUID]
			if c == nil {
				c = &merge.Contents{}
				out[lk.GUID] = c
			}
			have := map[uint32]bool{}
			for _, t := range c.Tombstones {
				have[t.UID] = true
			}
			for _, m := range c.Messages {
				have[m.UID] = true
			}
			for _, g := range lk.Messages {
				ts, err := expungesOf(tx, lk.GUID, g)
				if err != nil {
					return fmt.Errorf("mailbox %q: %w", b.Name, err)
				}
				for _, t := range ts {
					if !have[t.UID] {
						have[t.UID] = true
						c.Tombstones = append(c.Tombstones, t)
					}
				}
				// A copy held here unchanged, under another UID.
				ms, err := recordsOf(tx, lk.GUID, g)
				if err != nil {
					return fmt.Errorf("mailbox %q: %w", b.Name, err)
				}
				for _, m := range ms {
					if !have[m.UID] {
						have[m.UID] = true
						c.Messages = append(c.Messages, m)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, r.wrap("", err)
	}
	n := 0
	for _, c := range out {
		n += len(c.Messages) + len(c.Tombstones)
	}
	r.store.touched(n)
	return out, nil
}

func (r *Replica) fillEpochs(res *ApplyResult) {
	res.Epochs = map[model.MailboxGUID]uint64{}
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		boxes, err := allBoxes(tx)
		if len(boxes) > 0 { // (sized once: an epoch per mailbox)
			res.Epochs = make(map[model.MailboxGUID]uint64, len(boxes))
		}
		for _, b := range boxes {
			res.Epochs[b.GUID] = b.Epoch
		}
		return err
	})
}

// Epochs returns the current epoch of every mailbox.
func (r *Replica) Epochs() map[model.MailboxGUID]uint64 {
	var res ApplyResult
	r.fillEpochs(&res)
	return res.Epochs
}

// Commit saves the state of a finished sync with peer.
func (r *Replica) Commit(ctx context.Context, req replica.CommitRequest) error {
	err := r.store.db.Update(func(tx *bolt.Tx) error {
		ps := &replica.PairState{PeerIndexID: req.Peer.IndexID, SyncID: req.SyncID, Boxes: map[model.MailboxGUID]replica.PairBoxState{}}
		for g, base := range req.Bases {
			b, err := getBox(tx, g)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			pe, ok := req.PeerEpochs[g]
			if !ok {
				continue
			}
			ps.Boxes[g] = replica.PairBoxState{Base: base, Sent: b.Mailbox.Modseq, Epoch: b.Epoch, PeerEpoch: pe}
		}
		return putPair(tx, pairKey(req.Peer), ps)
	})
	if err != nil {
		return r.wrap("", err)
	}
	r.runFlagChangeHook(ctx)
	return nil
}

// Fetch streams bodies of this replica's messages.
func (r *Replica) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, rd io.Reader) error) error {
	// Where each body should be, from one read of the index; a file that
	// moved since (Dovecot renamed it) is looked up the slow way.
	paths := r.bodyPaths(refs)
	r.store.touched(len(refs))
	for i, ref := range refs {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := openSized(paths[i], ref.Size)
		if err != nil {
			f, err = r.OpenBody(ref)
		}
		if errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("message to send is gone", "guid", ref.GUID)
			continue
		} else if err != nil {
			return err
		}
		err = fn(i, io.LimitReader(f, ref.Size))
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// bodyPaths returns the recorded file of each ref ("" when the index does
// not hold the ref's GUID at its mailbox and UID).
func (r *Replica) bodyPaths(refs []replica.BodyRef) []string {
	out := make([]string, len(refs))
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		boxes := map[model.MailboxGUID]*Box{}
		for i, ref := range refs {
			b, ok := boxes[ref.Box]
			if !ok {
				b, _ = getBox(tx, ref.Box)
				boxes[ref.Box] = b
			}
			if b == nil {
				continue
			}
			bb, _ := buckets(tx, ref.Box, false)
			if bb == nil {
				continue
			}
			if v := bb.uid.Get(u32(ref.UID)); v != nil {
				if m, err := decodeMsg(v); err == nil && m.GUID == ref.GUID && !m.Held && m.fileOK() {
					out[i] = filepath.Join(r.loc.Root, b.Dir, subdir(m.New), m.File)
				}
			}
		}
		return nil
	})
	return out
}

// openSized opens path if it is a file of the given size.
func openSized(path string, size int64) (*os.File, error) {
	if path == "" {
		return nil, fs.ErrNotExist
	}
	// open(2) and os.NewFile: os.Open would also try to register the
	// regular file with the network poller (four fcntl and a failing
	// epoll_ctl per body a first sync sends).
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		f.Close()
		return nil, fs.ErrNotExist
	}
	return f, nil
}

// OpenBody opens the file of a message, found by mailbox and UID when they
// still hold its GUID, else by GUID anywhere in the replica.
func (r *Replica) OpenBody(ref replica.BodyRef) (*os.File, error) {
	var path string
	err := r.store.db.View(func(tx *bolt.Tx) error {
		if b, err := getBox(tx, ref.Box); err == nil && b != nil {
			if bb, _ := buckets(tx, ref.Box, false); bb != nil {
				if v := bb.uid.Get(u32(ref.UID)); v != nil {
					if m, err := decodeMsg(v); err == nil && m.GUID == ref.GUID && !m.Held && m.fileOK() {
						dir := filepath.Join(r.loc.Root, b.Dir)
						p := filepath.Join(dir, subdir(m.New), m.File)
						if _, err := os.Stat(p); err == nil {
							path = p
							return nil
						}
						if p := findByBase(dir, m.fileBase()); p != "" {
							path = p
							return nil
						}
					}
				}
			}
		}
		path = r.localFile(tx, ref.GUID, ref.Box, ref.Size)
		return nil
	})
	if err != nil {
		return nil, r.wrap("", err)
	}
	if path == "" {
		return nil, fs.ErrNotExist
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != ref.Size {
		f.Close()
		return nil, fs.ErrNotExist
	}
	return f, nil
}
