package index

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/model"
)

// The tombstone GUID index: kept by drop and put, built at open for an
// index written before it existed, and read by expungesOf and recordsOf.
func TestTombstoneGUIDIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBName)
	s, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g := model.MailboxGUID{1}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := &Box{Mailbox: model.Mailbox{GUID: g, Name: "INBOX", UIDValidity: 1}}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		for u, m := range map[uint32]string{1: "gone", 2: "moved", 3: "kept", 4: "back"} {
			if err := bt.put(&Msg{Message: model.Message{UID: u, GUID: m, Born: int64(u) * 10}}); err != nil {
				return err
			}
		}
		if err := bt.drop(1, &model.Tombstone{GUID: "gone"}); err != nil {
			return err
		}
		if err := bt.drop(2, &model.Tombstone{GUID: "moved", MovedTo: 5}); err != nil {
			return err
		}
		if err := bt.drop(4, &model.Tombstone{GUID: "back"}); err != nil {
			return err
		}
		// UID 4 names its message again (a refill): its expunge is gone.
		if err := bt.put(&Msg{Message: model.Message{UID: 4, GUID: "back"}}); err != nil {
			return err
		}
		if err := putBox(tx, b); err != nil {
			return err
		}
		// As an index written before the GUID index existed.
		return tx.DeleteBucket(bTGUIDs)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = openStore(path, time.Second); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.db.View(func(tx *bolt.Tx) error {
		for m, want := range map[string]int{"gone": 1, "moved": 0, "kept": 0, "back": 0, "unknown": 0} {
			ts, err := expungesOf(tx, g, m)
			if err != nil {
				return err
			}
			if len(ts) != want {
				t.Errorf("expunges of %q: %+v, want %d", m, ts, want)
			}
			if m == "gone" && len(ts) == 1 && (ts[0].UID != 1 || ts[0].Born != 10) {
				t.Errorf("expunge of %q: %+v, want UID 1 Born 10", m, ts[0])
			}
		}
		if ms, err := recordsOf(tx, g, "kept"); err != nil || len(ms) != 1 || ms[0].UID != 3 {
			t.Errorf("records of kept: %+v %v", ms, err)
		}
		if ms, err := recordsOf(tx, g, "gone"); err != nil || len(ms) != 0 {
			t.Errorf("records of gone: %+v %v", ms, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
