package index

import (
	"bytes"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/model"
)

// Two index records of one message GUID in one mailbox. An old bug left
// indexes so (an apply stopped between an add of a message and the expunge
// of the mailbox's killed instance of it, docs/design.md §7.6): every
// report then listed the GUID twice and the peer refused it, for ever. A
// scan repairs such a mailbox: the file that a scan without the index would
// give the GUID keeps it (messageGUIDs), and the other record is dropped
// without a tombstone (no message went anywhere) and read again as the file
// it is, under its own identity. The repair needs a full scan, which the
// mailbox's stamp would spare it: the first open of an index by a build
// that knows this looks for such mailboxes once (meta/dupchecked), marks
// each (meta/dupguid\0<mailbox GUID>) and clears its stamp.

var (
	metaDupChecked = []byte("dupchecked")
	dupPrefix      = []byte("dupguid\x00")
)

func dupKey(box model.MailboxGUID) []byte {
	return append(append([]byte(nil), dupPrefix...), box[:]...)
}

// checkDupGUIDs finds the mailboxes whose index holds two live records of
// one message GUID (one pass over the GUID bucket) and marks them for the
// scan's repair.
func checkDupGUIDs(tx *bolt.Tx) error {
	m := tx.Bucket(bMeta)
	if m.Get(metaDupChecked) != nil {
		return nil
	}
	boxes := map[model.MailboxGUID]bool{}
	var prev []byte
	c := tx.Bucket(bGUIDs).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) < 21 {
			continue
		}
		p := k[:len(k)-4] // msgGUID \0 boxGUID
		if prev != nil && bytes.Equal(p, prev[:len(prev)-4]) {
			var g model.MailboxGUID
			copy(g[:], p[len(p)-16:])
			if liveRecord(tx, g, prev[len(prev)-4:]) && liveRecord(tx, g, k[len(k)-4:]) {
				boxes[g] = true
			}
		}
		prev = append(prev[:0], k...)
	}
	for g := range boxes {
		b, err := getBox(tx, g)
		if err != nil || b == nil {
			continue
		}
		b.Stamp = Stamp{} // read in full by the next scan
		if err := putBox(tx, b); err != nil {
			return err
		}
		if err := m.Put(dupKey(g), []byte{1}); err != nil {
			return err
		}
	}
	return m.Put(metaDupChecked, []byte{1})
}

// liveRecord reports whether mailbox g holds a record at the 4-byte UID u
// that is not held back (a held record has no file).
func liveRecord(tx *bolt.Tx, g model.MailboxGUID, u []byte) bool {
	bb, err := buckets(tx, g, false)
	if err != nil || bb == nil {
		return false
	}
	v := bb.uid.Get(u)
	if v == nil {
		return false
	}
	msg, err := decodeMsg(v)
	return err == nil && !msg.Held && msg.UID == binary.BigEndian.Uint32(u)
}

// dupGUIDRecords returns the UIDs of the live records in old that share
// their GUID with another live record, when mailbox box is marked for the
// repair (nil otherwise), and clears the mark.
func dupGUIDRecords(tx *bolt.Tx, box model.MailboxGUID, old []*Msg) (map[uint32]bool, error) {
	m := tx.Bucket(bMeta)
	if m.Get(dupKey(box)) == nil {
		return nil, nil
	}
	first := map[string]uint32{}
	dup := map[uint32]bool{}
	for _, o := range old {
		if o.Held {
			continue
		}
		if u, ok := first[o.GUID]; ok {
			dup[u], dup[o.UID] = true, true
		} else {
			first[o.GUID] = o.UID
		}
	}
	return dup, m.Delete(dupKey(box))
}
