package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

// Born stamps are never invented for an instance that existed before
// (docs/design.md §4.2, §5.4):
//
//   - An apply journals the Born of every add of a mailbox (meta key
//     born\0<mailbox GUID>: message GUID -> Born, and the UIDNEXT the adds
//     reach) in the commit that records its tmp/ directory, before any
//     link. The mailbox's index commit clears the entry, and so does the
//     end of the apply. An apply killed in between leaves files linked
//     (and perhaps listed in the uidlist) without index records: the next
//     scan gives such a record the journaled Born of its GUID, not "now",
//     and clears the entry. A uidlist restored from the index, or a
//     mailbox found Missing, before that scan takes the journaled UIDNEXT.
//   - A new index (a lost one rebuilt from the disk, or a replica's first
//     scan) is marked unborn until a scan has completed. Records that the
//     uidlist listed before that scan, in mailboxes the index did not
//     know, get an unsure Born (negative: born at or before now, when
//     exactly is unknown; model/born.go): the kill rules never take it
//     for a time after the real one (§6.7). A sync learns the stamp from
//     a peer that holds the same UID and GUID (merge.BoxPlan.Borns).

var bornPrefix = []byte("born\x00")

// metaUnborn marks an index whose first complete scan is still to come.
var metaUnborn = []byte("unborn")

func bornKey(box model.MailboxGUID) []byte {
	return append(append([]byte(nil), bornPrefix...), box[:]...)
}

// journalBorns records, within tx, the Born stamps of the adds of each
// mailbox in sp (merged into an entry an earlier killed apply left), and
// the UIDNEXT those adds reach: an apply killed after its uidlist named
// them leaves the index's UIDNEXT below the uidlist's, and a uidlist lost
// before the next scan is restored from the index (establishUidlist),
// which must not give those UIDs out again.
func journalBorns(tx *bolt.Tx, sp *merge.SidePlan) error {
	if sp == nil {
		return nil
	}
	for i := range sp.Boxes {
		bp := &sp.Boxes[i]
		if len(bp.Adds) == 0 {
			continue
		}
		// Encoded straight from the adds (a first sync's mailbox may have
		// many); an entry a killed apply left is merged in (its stamps
		// first: the adds' own win, read later).
		old := bornJournal(tx, bp.GUID)
		var next uint32
		if old != nil {
			next = old.next
		}
		for _, a := range bp.Adds {
			next = max(next, a.Msg.UID+1)
		}
		for _, mv := range bp.Moves {
			next = max(next, mv.To+1)
		}
		v := binary.AppendUvarint(make([]byte, 0, 8+len(bp.Adds)*48), uint64(next))
		put := func(g string, b int64) {
			v = binary.AppendUvarint(v, uint64(len(g)))
			v = append(v, g...)
			v = binary.AppendVarint(v, b)
		}
		if old != nil {
			for g, b := range old.borns {
				put(g, b)
			}
		}
		for _, a := range bp.Adds {
			if a.Msg.Born != 0 {
				put(a.Msg.GUID, a.Msg.Born)
			}
		}
		if err := tx.Bucket(bMeta).Put(bornKey(bp.GUID), v); err != nil {
			return err
		}
	}
	return nil
}

// bornEntry is one mailbox's journal entry: the Born stamps of its adds by
// message GUID, and the UIDNEXT the adds reach.
type bornEntry struct {
	next  uint32
	borns map[string]int64
}

var errBadBornJournal = errors.New("bad Born journal entry")

// bornJournal returns mailbox box's journal entry, or nil when there is
// none (an entry that does not decode counts as none: the records then get
// stamps of their own, as before the journal).
func bornJournal(tx *bolt.Tx, box model.MailboxGUID) *bornEntry {
	v := tx.Bucket(bMeta).Get(bornKey(box))
	if v == nil {
		return nil
	}
	j, err := decodeBornJournal(v)
	if err != nil {
		return nil
	}
	return j
}

func decodeBornJournal(v []byte) (*bornEntry, error) {
	next, k := binary.Uvarint(v)
	if k <= 0 || next > math.MaxUint32 {
		return nil, errBadBornJournal
	}
	v = v[k:]
	j := &bornEntry{next: uint32(next), borns: map[string]int64{}}
	for len(v) > 0 {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return nil, errBadBornJournal
		}
		g := string(v[k : k+int(n)])
		v = v[k+int(n):]
		b, k := binary.Varint(v)
		if k <= 0 {
			return nil, errBadBornJournal
		}
		v = v[k:]
		j.borns[g] = b
	}
	return j, nil
}

// journalNext records (merged into mailbox box's journal entry) that an
// apply is about to give out UIDs below next: renumberings of a mailbox
// with no adds (journalBorns covers the rest).
func (r *Replica) journalNext(box model.MailboxGUID, next uint32) error {
	if r.opt.DryRun {
		return nil
	}
	return r.store.db.Update(func(tx *bolt.Tx) error {
		j := bornJournal(tx, box)
		if j == nil {
			j = &bornEntry{borns: map[string]int64{}}
		} else if j.next >= next {
			return nil
		}
		v := binary.AppendUvarint(nil, uint64(max(j.next, next)))
		for g, b := range j.borns {
			v = binary.AppendUvarint(v, uint64(len(g)))
			v = append(v, g...)
			v = binary.AppendVarint(v, b)
		}
		return tx.Bucket(bMeta).Put(bornKey(box), v)
	})
}

// clearBornJournal removes mailbox box's journal entry, if any.
func clearBornJournal(tx *bolt.Tx, box model.MailboxGUID) error {
	m := tx.Bucket(bMeta)
	if m.Get(bornKey(box)) == nil {
		return nil
	}
	return m.Delete(bornKey(box))
}

// clearBornJournals removes every journal entry (an apply that ended).
func clearBornJournals(tx *bolt.Tx) error {
	m := tx.Bucket(bMeta)
	var keys [][]byte
	c := m.Cursor()
	for k, _ := c.Seek(bornPrefix); k != nil && bytes.HasPrefix(k, bornPrefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// learnBorns gives the records of bt the Born stamps the peer holds for
// the same instances (merge.BoxPlan.Borns): where the record at the UID
// still holds the GUID and its stamp says less (model.BetterBorn). Born is the
// instance's, not a change of this replica: no new modseq.
func (r *Replica) learnBorns(tx *bolt.Tx, bt *boxTx, borns []merge.BornSet) error {
	var hi int64
	for _, b := range borns {
		m, err := bt.get(b.UID)
		if err != nil {
			return err
		}
		if m == nil || m.GUID != b.GUID || !model.BetterBorn(b.Born, m.Born) {
			continue
		}
		m.Born = b.Born
		hi = max(hi, model.BornTime(b.Born))
		if err := bt.putQuiet(m); err != nil {
			return err
		}
	}
	r.store.observe(tx, hi)
	return nil
}

// bornOf is the Born of a record the scan makes for message guid at a UID
// the index did not hold (not renumbered): the journaled stamp of an add
// that a killed apply linked, else unsure (born at or before now) where the
// record was listed before an unborn index's first scan (listed is true),
// else now.
func (r *Replica) bornOf(tx *bolt.Tx, journal *bornEntry, guid string, listed bool) int64 {
	if journal == nil {
		journal = &bornEntry{}
	}
	if b, ok := journal.borns[guid]; ok && b != 0 {
		r.store.observe(tx, model.BornTime(b))
		return b
	}
	if listed {
		return -r.store.stamp(tx, 0)
	}
	return r.store.stamp(tx, 0)
}
