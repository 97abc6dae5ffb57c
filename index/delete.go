package index

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
)

// DeleteResult says what DeleteMailbox did.
type DeleteResult struct {
	Mailbox  string
	GUID     model.MailboxGUID
	Messages int // messages the mailbox held on this replica
}

// ErrNoMailbox is wrapped by DeleteMailbox for a name no live mailbox has.
var ErrNoMailbox = errors.New("no such mailbox")

// DeleteMailbox deletes a mailbox with intent (contract §5, "twinbox's own
// delete command"): what Dovecot's DELETE does on disk (the directory
// renamed out of sight and removed; under LAYOUT=fs child folders stay, as
// in Maildir++ where they are directories of their own), a delete-mailbox
// record in dovecot.mailbox.log, and the delete recorded in the index at
// once. The next sync replicates it as a delete; mail that arrived on a
// peer after it keeps the mailbox alive there and brings it back here.
//
// The replica is scanned first, so that every message the directory holds
// is known to the index and goes with it as an expunge. A kill between the
// removal and the index commit leaves the log record, from which the next
// scan records the delete all the same; a kill before the log record
// leaves a missing mailbox, restored from the peer (nothing lost).
func (r *Replica) DeleteMailbox(ctx context.Context, name string) (*DeleteResult, error) {
	if model.IsInbox(name) {
		return nil, r.errf(name, "INBOX cannot be deleted")
	}
	if _, err := r.Scan(ctx); err != nil {
		return nil, err
	}
	b, err := r.liveBox(name)
	if err != nil {
		return nil, err
	}
	if r.opt.DryRun {
		return &DeleteResult{Mailbox: b.Name, GUID: b.GUID, Messages: b.Messages}, nil
	}
	dir, err := r.locate(b)
	if err != nil {
		return nil, r.wrap(name, fmt.Errorf("finding its directory: %w", err))
	}
	lk, err := r.lockUidlist(ctx, dir)
	if err != nil {
		return nil, r.wrap(name, err)
	}
	ll, err := r.lockIndexLog(ctx, dir)
	if err != nil {
		lk.Unlock()
		return nil, r.wrap(name, fmt.Errorf("Dovecot is changing its index, try again: %w", err))
	}
	nl, err := r.lockIndexLogCreation(ctx, dir)
	if err != nil {
		ll.Unlock()
		lk.Unlock()
		return nil, r.wrap(name, fmt.Errorf("Dovecot is creating its index, try again: %w", err))
	}
	if testHookBeforeDirMove != nil {
		testHookBeforeDirMove(dir)
	}
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
		return nil, r.wrap(name, err)
	}
	_ = lk.Unlock() // (removed with the directory)
	now := r.opt.Now()
	if err := maildir.AppendMailboxLog(r.loc.Root, []maildir.LogRecord{{Type: maildir.LogDeleteMailbox, GUID: [16]byte(b.GUID), Time: now}}); err != nil {
		// The directory is gone without a recorded intent: the next scan
		// finds it missing and the peer restores it. Say so.
		return nil, r.wrap(name, fmt.Errorf("removed, but recording the delete failed (the next sync restores it from the peer): %w", err))
	}
	res := &DeleteResult{Mailbox: b.Name, GUID: b.GUID}
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, b.GUID)
		if err != nil || b == nil {
			return err
		}
		res.Messages, err = r.markDeleted(tx, b, func() int64 { return r.store.stamp(tx, now.UnixNano()) })
		return err
	})
	if err != nil {
		return nil, r.wrap(name, err)
	}
	r.log.Info("mailbox deleted", "mailbox", b.Name, "guid", b.GUID.String(), "messages", res.Messages)
	return res, nil
}

// liveBox finds the live mailbox called name.
func (r *Replica) liveBox(name string) (*Box, error) {
	var found *Box
	err := r.store.db.View(func(tx *bolt.Tx) error {
		all, err := allBoxes(tx)
		if err != nil {
			return err
		}
		for _, b := range all {
			if b.Name == name && !b.Deleted && !b.Missing {
				found = b
			}
		}
		return nil
	})
	if err != nil {
		return nil, r.wrap(name, err)
	}
	if found == nil {
		return nil, r.wrap(name, fmt.Errorf("%w (twinbox's index has none of that name: was it scanned? names use / as the separator)", ErrNoMailbox))
	}
	return found, nil
}

// markDeleted records a delete with intent of b: every message expunged
// (a tombstone each), the mailbox deleted at deletedT (asked after the
// tombstones are stamped) and given a new epoch, so that saved sync state
// stops here. It returns how many messages went.
func (r *Replica) markDeleted(tx *bolt.Tx, b *Box, deletedT func() int64) (int, error) {
	bt, err := openBoxTx(tx, b)
	if err != nil {
		return 0, err
	}
	msgs, err := loadMsgs(tx, b.GUID)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if err := bt.drop(m.UID, &model.Tombstone{GUID: m.GUID, T: r.store.stamp(tx, 0)}); err != nil {
			return 0, err
		}
	}
	b.Deleted, b.Missing, b.Messages = true, false, 0
	b.DeletedT = deletedT()
	// A new epoch: should a new mailbox of the same name merge into this
	// one, the merge needs the peer's records in full.
	b.Epoch = randomUint64()
	return len(msgs), putBox(tx, b)
}
