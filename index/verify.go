package index

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/model"
)

// VerifyEnv names the environment variable that makes Close check the
// index's invariants and print any broken one on stderr (tests set it on
// the real binary; the check reads the whole index).
const VerifyEnv = "TWINBOX_TEST_VERIFY_INDEX"

// Verify checks the invariants that incremental syncs rely on and returns
// one line per violation (none: nil). A record or tombstone that the
// modseq buckets do not point at is invisible to Changes(Since): a peer
// that synced from saved state would never hear of it.
//
//   - every record's and tombstone's modseq is at most its mailbox's;
//   - the modseq bucket maps each record's modseq to its UID (likewise
//     tombstones), so no two entries share a modseq;
//   - a UID is not both a record and a tombstone;
//   - every record is in the message-GUID bucket;
//   - no two live (not held) records of a mailbox share a message GUID
//     (every report would list it twice, and the peer refuses that).
func (r *Replica) Verify() []string {
	var out []string
	err := r.store.db.View(func(tx *bolt.Tx) error {
		boxes, err := allBoxes(tx)
		if err != nil {
			return err
		}
		for _, b := range boxes {
			out = append(out, verifyBox(tx, b)...)
		}
		return nil
	})
	if err != nil {
		out = append(out, err.Error())
	}
	for i := range out {
		out[i] = describe(r.opt.User, r.loc.Root) + ": " + out[i]
	}
	return out
}

func verifyBox(tx *bolt.Tx, b *Box) []string {
	var out []string
	bad := func(format string, args ...any) {
		out = append(out, fmt.Sprintf("mailbox %q (%s, modseq %d): ", b.Name, b.GUID, b.Modseq)+fmt.Sprintf(format, args...))
	}
	bb, err := buckets(tx, b.GUID, false)
	if err != nil {
		bad("%v", err)
		return out
	}
	if bb == nil {
		return nil
	}
	// reachable checks that modseq is the mailbox's at most and that the
	// modseq bucket mod points back at UID u.
	reachable := func(what string, u uint32, modseq uint64, mod *bolt.Bucket) {
		if modseq > b.Modseq {
			bad("%s %d has modseq %d above the mailbox's", what, u, modseq)
		}
		if p := mod.Get(u64(modseq)); p == nil {
			bad("%s %d: modseq %d has no entry (invisible to incremental syncs)", what, u, modseq)
		} else if pu := binary.BigEndian.Uint32(p); pu != u {
			bad("%s %d: modseq %d points at UID %d (invisible to incremental syncs)", what, u, modseq, pu)
		}
	}
	live := map[uint32]bool{}
	byGUID := map[string]uint32{}
	err = bb.uid.ForEach(func(k, v []byte) error {
		u := binary.BigEndian.Uint32(k)
		m, err := decodeMsg(v)
		if err != nil {
			bad("UID %d: %v", u, err)
			return nil
		}
		live[u] = true
		if m.UID != u {
			bad("record at UID %d says UID %d", u, m.UID)
		}
		reachable("UID", u, m.Modseq, bb.mod)
		if tx.Bucket(bGUIDs).Get(guidKey(m.GUID, b.GUID, u)) == nil {
			bad("UID %d: message %s missing from the GUID bucket", u, m.GUID)
		}
		if !m.Held {
			if o, ok := byGUID[m.GUID]; ok {
				bad("UIDs %d and %d: two records of message %s", o, u, m.GUID)
			}
			byGUID[m.GUID] = u
		}
		return nil
	})
	if err != nil {
		bad("%v", err)
	}
	err = bb.tomb.ForEach(func(k, v []byte) error {
		u := binary.BigEndian.Uint32(k)
		var t model.Tombstone
		if err := json.Unmarshal(v, &t); err != nil {
			bad("tombstone at UID %d: %v", u, err)
			return nil
		}
		if live[u] {
			bad("UID %d is both a record and a tombstone", u)
		}
		reachable("tombstone UID", u, t.Modseq, bb.tmod)
		return nil
	})
	if err != nil {
		bad("%v", err)
	}
	return out
}

// verifyOnClose prints broken invariants when VerifyEnv is set.
func (r *Replica) verifyOnClose() {
	if os.Getenv(VerifyEnv) == "" || r.opt.DryRun {
		return
	}
	for _, l := range r.Verify() {
		fmt.Fprintln(os.Stderr, "twinbox: index invariant broken:", l)
	}
}
