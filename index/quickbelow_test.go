package index

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
)

// TestQuickScanSendsARecordBelowUIDNEXTToTheFullScan: the index knows a
// mailbox's dovecot-uidlist as it is (same mtime, size, inode) and has its
// UIDNEXT above a uidlist record it holds nothing for, neither a message
// nor a tombstone; then a client changes a flag, so the next scan of the
// mailbox takes the quick way (scanKnown: the uidlist unchanged, cur/
// changed) and meets that record's file as one the index does not know.
// No writer of this version leaves an index so (the scans keep UIDNEXT at
// or below such a record and read the uidlist in full next time), but the
// quick scan did before TestMessageSavedDuringQuickScanReaches's fix, and
// an index it wrote is one an upgrade opens; this test writes that state
// into the index by hand. A peer's saved state may then
// say both sides agree below that UIDNEXT, and the message, taken as a
// plain new one, would be taken for one the peer has: it would stay on
// this replica for good. The quick scan must leave it to the full scan,
// which gives the mailbox a new epoch (saved states stale, the sync
// compares it in full), as for the same record met there (property seed
// 14445215212692406235).
func TestQuickScanSendsARecordBelowUIDNEXTToTheFullScan(t *testing.T) {
	defer SetTestRacyWindow(0)()
	root := t.TempDir()
	dir := filepath.Join(root, ".Box")
	putFile(t, dir, "1700000001.M1P1.host,S=6", "one\r\n")
	missed := putFile(t, dir, "1700000002.M2P1.host,S=6", "two\r\n")
	r := openTestReplica(t, root)
	ctx := context.Background()
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := model.MailboxGUID(ul.GUID)
	var uid uint32
	for _, rec := range ul.Records {
		if rec.FileName == missed+":2," || rec.FileName == missed {
			uid = rec.UID
		}
	}
	if uid == 0 || uid+1 != ul.NextUID {
		t.Fatalf("uidlist %+v: want %s at the last UID", ul, missed)
	}

	// The state an old quick scan left: the record gone from the index
	// (no tombstone), UIDNEXT and the uidlist's stamp as they were.
	var epoch uint64
	err = r.store.db.Update(func(tx *bolt.Tx) error {
		box, err := getBox(tx, g)
		if err != nil || box == nil {
			t.Fatalf("box %v: %v", g, err)
		}
		if box.UIDNext != ul.NextUID {
			t.Fatalf("index UIDNEXT %d, uidlist %d", box.UIDNext, ul.NextUID)
		}
		bt, err := openBoxTx(tx, box)
		if err != nil {
			return err
		}
		m, err := bt.get(uid)
		if err != nil || m == nil {
			t.Fatalf("UID %d not in the index: %v", uid, err)
		}
		if err := bt.bb.uid.Delete(u32(uid)); err != nil {
			return err
		}
		if err := bt.bb.mod.Delete(u64(m.Modseq)); err != nil {
			return err
		}
		if err := tx.Bucket(bGUIDs).Delete(guidKey(m.GUID, g, uid)); err != nil {
			return err
		}
		box.Messages--
		epoch = box.Epoch
		return putBox(tx, box)
	})
	if err != nil {
		t.Fatal(err)
	}

	// A client sets \Seen on the first message: cur/ changes, the uidlist
	// does not.
	cur := filepath.Join(dir, "cur")
	before, err := os.Stat(cur)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(cur, "1700000001.M1P1.host,S=6:2,"), filepath.Join(cur, "1700000001.M1P1.host,S=6:2,S")); err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(cur); err == nil && after.ModTime().Equal(before.ModTime()) {
		// (A coarse file clock: make the change visible.)
		later := before.ModTime().Add(time.Second)
		if err := os.Chtimes(cur, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}

	err = r.store.db.View(func(tx *bolt.Tx) error {
		box, err := getBox(tx, g)
		if err != nil || box == nil {
			t.Fatalf("box %v: %v", g, err)
		}
		bb, err := buckets(tx, g, false)
		if err != nil || bb == nil {
			t.Fatalf("box %v's records: %v", g, err)
		}
		var m *Msg
		if v := bb.uid.Get(u32(uid)); v != nil {
			if m, err = decodeMsg(v); err != nil {
				return err
			}
		}
		if m == nil || m.fileBase() != missed {
			t.Errorf("UID %d after the scan: %+v; want the file %s", uid, m, missed)
		}
		if box.Epoch == epoch {
			t.Errorf("the mailbox kept its epoch: peers' saved states of it still count, and the message at UID %d, below the UIDNEXT they saved, would be taken for one they have", uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
