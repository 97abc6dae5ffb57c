package index

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// A UID that was retired, got a record again and was retired once more
// before the next sync reported its tombstone twice (a stale modseq entry
// left by put), and the engine refused the replica ("tombstone for UID
// clashes") at every sync after: found by the IMAP stress test.
func TestTombstoneReportedOnceAfterPutBetweenDrops(t *testing.T) {
	st, err := openStore(filepath.Join(t.TempDir(), DBName), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.now = time.Now
	g := model.MailboxGUID{1, 2, 3}
	err = st.db.Update(func(tx *bolt.Tx) error {
		b := &Box{Mailbox: model.Mailbox{GUID: g, Name: "INBOX", UIDValidity: 1}}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		steps := []func() error{
			func() error { return bt.put(&Msg{Message: model.Message{UID: 7, GUID: "one"}}) },
			func() error { return bt.drop(7, &model.Tombstone{GUID: "one"}) },
			func() error { return bt.put(&Msg{Message: model.Message{UID: 7, GUID: "two"}}) },
			func() error { return bt.drop(7, &model.Tombstone{GUID: "two"}) },
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return err
			}
		}
		return putBox(tx, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Replica{store: st, loc: maildir.Location{Root: t.TempDir()}}
	ch, err := r.Changes(context.Background(), replica.ChangesRequest{Boxes: []replica.BoxSince{{GUID: g, Since: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	c := ch[g]
	if c == nil || len(c.Tombstones) != 1 || c.Tombstones[0].GUID != "two" || len(c.Messages) != 0 {
		t.Fatalf("changes: %+v", c)
	}
}

// Dovecot copies a message within one mailbox as a new file whose uidlist
// record carries the original's GUID (G field): one GUID, two files. The
// scan gave both records that GUID when the copy had the lower UID, and the
// engine refused the replica ("message GUID listed twice") at every sync:
// found by the IMAP stress test.
func TestMessageGUIDsUniqueWithCopiesInOneMailbox(t *testing.T) {
	rec := func(uid uint32, file, g string) maildir.UidRecord {
		r := maildir.UidRecord{UID: uid, FileName: file}
		if g != "" {
			r.Set('G', g)
		}
		return r
	}
	all := func(string) bool { return true }
	cases := []struct {
		name string
		recs []maildir.UidRecord
		want map[uint32]string
	}{
		{"copy after original", []maildir.UidRecord{rec(1, "X,S=5", ""), rec(2, "Y,S=5", "X,S=5")}, map[uint32]string{1: "X,S=5", 2: "Y,S=5"}},
		{"copy before original", []maildir.UidRecord{rec(3, "Y,S=5", "X,S=5"), rec(5, "X,S=5", "")}, map[uint32]string{3: "Y,S=5", 5: "X,S=5"}},
		{"two copies, original gone", []maildir.UidRecord{rec(4, "Z,S=5", "X,S=5"), rec(2, "Y,S=5", "X,S=5")}, map[uint32]string{2: "X,S=5", 4: "Z,S=5"}},
		{"copy from another mailbox", []maildir.UidRecord{rec(1, "Y,S=5", "X,S=5")}, map[uint32]string{1: "X,S=5"}},
		{"base taken by a G field", []maildir.UidRecord{rec(1, "Y,S=5", "X,S=5"), rec(2, "Z,S=5", "Y,S=5"), rec(3, "X,S=5", "")}, map[uint32]string{2: "Y,S=5", 3: "X,S=5"}},
	}
	for _, c := range cases {
		got := messageGUIDs(c.recs, all)
		if len(got) != len(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
			continue
		}
		for u, g := range c.want {
			if got[u] != g {
				t.Errorf("%s: got %v, want %v", c.name, got, c.want)
				break
			}
		}
	}
}
