package index

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

// The adopt journal (docs/design.md §4.1, §7.3). An adopt (a merge of two
// mailboxes, contract §3.4, or a backup reset under a new UIDVALIDITY)
// rewrites the loser's dovecot-uidlist with the winner's GUID and
// UIDVALIDITY, and only then does the index record the merge (applyBox).
// An apply killed in between used to leave the index holding the loser
// live at a directory that now holds the winner: the next scan took the
// winner for a new mailbox and the loser for Missing, and the peers
// restored the loser renamed aside (INBOX, never renamed on disk, never
// converged).
//
// So before the rewrite, in the commit that records the adopting
// directory (applyAdoptDir, no extra commit), the apply journals what the
// rewrite is about to make true: meta key adopt\0<winner GUID> -> the
// loser's GUID, the directory, the winner's name, NameT and UIDVALIDITY.
// The mailbox's index commit clears the entry, and so does the end of the
// apply. The next scan that finds that directory's uidlist carrying the
// winner's GUID and UIDVALIDITY while the index still holds the loser live
// there completes the merge in the index as the commit would have
// (completeAdopt): the loser becomes an alias of the winner, and the
// records of the files the rewrite kept move to their new UIDs with their
// Born stamps; the adds' records come from the scan as after any killed
// apply (their Born from the Born journal). The directory may have been
// renamed by a client since (adoptDone). A loser whose directory is gone
// by that scan is recorded as merged, the winner Deleted or Missing with
// the UIDNEXT the killed uidlist may have reached (vanishedAdopt). An entry
// whose directory still shows the loser (a kill before the rewrite) is
// dropped by the scan: it is harmless, the adopt never happened.

var adoptPrefix = []byte("adopt\x00")

func adoptKey(to model.MailboxGUID) []byte {
	return append(append([]byte(nil), adoptPrefix...), to[:]...)
}

// adoptEntry is one journaled adopt.
type adoptEntry struct {
	From        model.MailboxGUID `json:"from"`
	To          model.MailboxGUID `json:"to"`
	Dir         string            `json:"dir"` // relative to the root, as Box.Dir
	Name        string            `json:"name"`
	NameT       int64             `json:"name_t"`
	UIDValidity uint32            `json:"uidvalidity"`
	// Revived is what the winner's record takes (Box.Revived): the latest
	// DELETE of its GUID in dovecot.mailbox.log as the apply began.
	Revived int64 `json:"revived,omitempty"`
	// Next is the plan's UIDNEXT for the winner: the rewritten uidlist's
	// NEXTUID is at least that.
	Next uint32 `json:"next,omitempty"`
}

// journalAdopt records, within tx, that the apply is about to rewrite the
// uidlist in dir (relative) for the adopt a.
func journalAdopt(tx *bolt.Tx, a merge.Adopt, dir string, revived int64, next uint32) error {
	v, err := json.Marshal(adoptEntry{From: a.From, To: a.To, Dir: dir, Name: a.Name, NameT: a.NameT, UIDValidity: a.UIDValidity, Revived: revived, Next: next})
	if err != nil {
		return err
	}
	return tx.Bucket(bMeta).Put(adoptKey(a.To), v)
}

// clearAdoptJournal removes the entry of the adopt into to, if any.
func clearAdoptJournal(tx *bolt.Tx, to model.MailboxGUID) error {
	m := tx.Bucket(bMeta)
	if m.Get(adoptKey(to)) == nil {
		return nil
	}
	return m.Delete(adoptKey(to))
}

// clearAdoptJournals removes every entry (an apply that ended, a scan
// that read every directory).
func clearAdoptJournals(tx *bolt.Tx) error {
	m := tx.Bucket(bMeta)
	var keys [][]byte
	c := m.Cursor()
	for k, _ := c.Seek(adoptPrefix); k != nil && bytes.HasPrefix(k, adoptPrefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// adoptJournals returns the journaled adopts by winner GUID (entries that
// do not decode are left out: the scan then does what it did before the
// journal).
func (r *Replica) adoptJournals() (map[model.MailboxGUID]*adoptEntry, error) {
	var out map[model.MailboxGUID]*adoptEntry
	err := r.store.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bMeta).Cursor()
		for k, v := c.Seek(adoptPrefix); k != nil && bytes.HasPrefix(k, adoptPrefix); k, v = c.Next() {
			var e adoptEntry
			if json.Unmarshal(v, &e) != nil || !bytes.Equal(k[len(adoptPrefix):], e.To[:]) {
				r.log.Warn("ignoring a damaged adopt journal entry", "key", fmt.Sprintf("%x", k))
				continue
			}
			if out == nil {
				out = map[model.MailboxGUID]*adoptEntry{}
			}
			out[e.To] = &e
		}
		return nil
	})
	return out, err
}

// completeAdopt records in the index an adopt that a killed apply carried
// out on disk (the uidlist ul, read from directory rel, carries the
// winner's GUID and UIDVALIDITY) but did not record, as applyBox's commit
// would have: the loser loser (byGUID's record, changed in place) becomes
// an alias of the winner, and the winner's record takes the loser's
// directory and, for each uidlist record whose file the loser's index
// record had, that record at its new UID (flags and Born kept). The scan
// that follows reads the mailbox in full (its stamp is cleared). It
// returns the winner's record.
func (r *Replica) completeAdopt(j *adoptEntry, ul *maildir.Uidlist, rel string, loser *Box) (*Box, error) {
	var out *Box
	err := r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, j.From)
		if err != nil || b == nil {
			return fmt.Errorf("mailbox %s left the index: %v", j.From, err)
		}
		old, err := loadMsgs(tx, b.GUID)
		if err != nil {
			return err
		}
		byBase := make(map[string]*Msg, len(old))
		for _, m := range old {
			if !m.Held {
				byBase[m.fileBase()] = m
			}
		}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		if err := bt.resetMessages(); err != nil {
			return err
		}
		if j.From != j.To {
			if _, err := r.aliasLoser(tx, b, j, loser); err != nil {
				return err
			}
		}
		b.GUID, b.UIDValidity, b.Name, b.NameT = j.To, j.UIDValidity, j.Name, j.NameT
		b.Deleted, b.Missing, b.DeletedT, b.MergedInto = false, false, 0, model.MailboxGUID{}
		b.Revived = j.Revived
		b.Epoch = randomUint64()
		b.Stamp = Stamp{}
		b.Dir = rel
		b.Held = 0
		bt, err = openBoxTx(tx, b)
		if err != nil {
			return err
		}
		// Adds of the killed apply are left to the scan (their Born is in
		// the Born journal); the loser's messages the rewrite kept keep
		// their record, at the new UID.
		born := bornJournal(tx, j.To)
		n := 0
		for _, rec := range ul.Records {
			src := byBase[baseOf(rec.FileName)]
			if src == nil {
				continue
			}
			if born != nil {
				if _, ok := born.borns[src.GUID]; ok {
					continue // an add (a backup reset keeps the file)
				}
			}
			delete(byBase, baseOf(rec.FileName))
			c := *src
			c.UID, c.File = rec.UID, rec.FileName
			if err := bt.put(&c); err != nil {
				return err
			}
			n++
		}
		b.UIDNext = ul.NextUID
		b.Messages = n
		if err := clearAdoptJournal(tx, j.To); err != nil {
			return err
		}
		out = b
		return putBox(tx, b)
	})
	if err != nil {
		return nil, err
	}
	if j.From == j.To {
		*loser = *out
		out = loser
	}
	r.log.Warn("completed a merge that an interrupted sync left unrecorded", "mailbox", j.Name, "from", j.From.String(), "into", j.To.String())
	return out, nil
}

// aliasLoser records, within tx, the loser b of the journaled adopt j as
// an alias of the winner (deleted, merged into j.To, §4.6) and copies it
// to *loser; b, about to become the winner's record, takes at least the
// winner's modseq. It returns the winner's old record, if the index has
// one.
func (r *Replica) aliasLoser(tx *bolt.Tx, b *Box, j *adoptEntry, loser *Box) (*Box, error) {
	alias := *b
	alias.Deleted, alias.DeletedT, alias.Missing, alias.MergedInto = true, r.store.stamp(tx, b.NameT), false, j.To
	alias.Messages, alias.Held, alias.Keywords, alias.Stamp, alias.Dir = 0, 0, nil, Stamp{}, ""
	alias.Epoch = randomUint64()
	if err := putBox(tx, &alias); err != nil {
		return nil, err
	}
	*loser = alias
	nb, err := getBox(tx, j.To)
	if err != nil || nb == nil {
		return nil, nil
	}
	b.Mailbox.Modseq = max(b.Mailbox.Modseq, nb.Mailbox.Modseq)
	return nb, nil
}

// adoptDone reports whether the uidlist ul of directory rel shows the
// journaled adopt j carried out while the index (byGUID) still holds the
// mailbox as before it: the loser at the journaled directory, not found
// elsewhere by this scan, and the winner not live in the index (the merge
// adopts only where the winner is absent, deleted or missing). The
// directory may have moved since (a client renamed the folder): then the
// journaled one must not hold the loser any more.
func (r *Replica) adoptDone(j *adoptEntry, ul *maildir.Uidlist, rel string, byGUID map[model.MailboxGUID]*Box, found map[model.MailboxGUID]bool) bool {
	if model.MailboxGUID(ul.GUID) != j.To || ul.UIDValidity != j.UIDValidity || found[j.From] {
		return false
	}
	l := byGUID[j.From]
	if l == nil || l.Deleted || l.Dir != j.Dir {
		return false
	}
	if rel != j.Dir {
		if h, err := readUidlistHeader(filepath.Join(r.loc.Root, j.Dir)); err == nil && model.MailboxGUID(h.GUID) == j.From {
			return false
		}
	}
	if j.From == j.To {
		return l.UIDValidity != ul.UIDValidity
	}
	w := byGUID[j.To]
	return w == nil || w.Deleted || w.Missing
}

// vanishedAdopt handles the loser of a journaled adopt whose directory is
// gone by the scan after the kill (removed, or deleted by a client): the
// uidlist that would tell whether the rewrite happened is gone with it. It
// records the merge as done, with the winner gone from this replica: the
// loser becomes an alias of the winner, and the winner is Deleted when
// dovecot.mailbox.log records a delete of its GUID since the apply (a
// client deleted the mailbox under its new identity: that delete
// replicates), else Missing (restored from the peer, which holds it). Its
// UIDNEXT is at least the one the killed apply's uidlist may have given
// out (the Born journal's): a Dovecot that read that uidlist remembers
// those UIDs under the winner's GUID and UIDVALIDITY, and the mailbox may
// come back under them. Were the loser made Missing instead, it came back
// and was merged again below that UIDNEXT.
func (r *Replica) vanishedAdopt(loser *Box, j *adoptEntry, logRecs []maildir.LogRecord) error {
	return r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, j.From)
		if err != nil || b == nil {
			return fmt.Errorf("mailbox %s left the index: %v", j.From, err)
		}
		next := max(1, j.Next)
		if bj := bornJournal(tx, j.To); bj != nil {
			next = max(next, bj.next)
		}
		if bj := bornJournal(tx, j.From); bj != nil && b.UIDValidity == j.UIDValidity {
			next = max(next, bj.next)
		}
		if b.UIDValidity == j.UIDValidity {
			next = max(next, b.UIDNext) // the directory's NEXTUID was kept
		}
		if err := clearBornJournal(tx, j.To); err != nil {
			return err
		}
		if err := clearBornJournal(tx, j.From); err != nil {
			return err
		}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		if err := bt.resetMessages(); err != nil {
			return err
		}
		if j.From != j.To {
			nb, err := r.aliasLoser(tx, b, j, loser)
			if err != nil {
				return err
			}
			if nb != nil && nb.UIDValidity == j.UIDValidity {
				next = max(next, nb.UIDNext)
			}
		}
		b.GUID, b.UIDValidity, b.Name, b.NameT = j.To, j.UIDValidity, j.Name, j.NameT
		b.Deleted, b.Missing, b.DeletedT, b.MergedInto = false, false, 0, model.MailboxGUID{}
		b.Revived, b.Epoch, b.Stamp, b.Dir = j.Revived, randomUint64(), Stamp{}, j.Dir
		b.Messages, b.Held, b.Keywords = 0, 0, nil
		b.UIDNext = next
		if err := clearAdoptJournal(tx, j.To); err != nil {
			return err
		}
		if delT := deleteTime(logRecs, b); !delT.IsZero() && !model.IsInbox(b.Name) {
			_, err := r.markDeleted(tx, b, func() int64 { return r.store.stamp(tx, delT.UnixNano()) })
			r.log.Info("mailbox deleted (a merge an interrupted sync left unrecorded)", "mailbox", b.Name, "guid", b.GUID.String())
			return err
		}
		b.Missing = true
		r.log.Warn("mailbox directory vanished without a recorded delete after an interrupted merge: it will be restored from the peer", "mailbox", b.Name)
		return putBox(tx, b)
	})
}

// adoptOf returns the journaled adopt whose loser is b (at its journaled
// directory), when the winner is not live in the index nor found by this
// scan; nil otherwise.
func adoptOf(adopts map[model.MailboxGUID]*adoptEntry, b *Box, byGUID map[model.MailboxGUID]*Box, found map[model.MailboxGUID]bool) *adoptEntry {
	for _, j := range adopts {
		if j.From != b.GUID || j.Dir != b.Dir || found[j.To] {
			continue
		}
		if w := byGUID[j.To]; j.From != j.To && w != nil && !w.Deleted && !w.Missing {
			continue
		}
		return j
	}
	return nil
}

// adoptPendingFrom reports whether an adopt of mailbox from is journaled
// (the next scan after a killed apply). A directory of from's that the
// scan finds without a uidlist may have had its uidlist rewritten to the
// winner's identity and then lost (rm -rf and made again, or a client's
// delete logged under the winner's GUID and a new folder): it is a new
// mailbox, not from restored from the index, and from goes the way of
// vanishedAdopt (an alias; the winner Deleted or Missing with the UIDNEXT
// the lost uidlist may have reached). Restored, from was merged into the
// winner again with a UIDNEXT counted from its own, and a UID of the lost
// uidlist named another message.
func (r *Replica) adoptPendingFrom(from model.MailboxGUID) bool {
	pending := false
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bMeta).Cursor()
		for k, v := c.Seek(adoptPrefix); k != nil && bytes.HasPrefix(k, adoptPrefix); k, v = c.Next() {
			var e adoptEntry
			if json.Unmarshal(v, &e) == nil && e.From == from {
				pending = true
			}
		}
		return nil
	})
	return pending
}
