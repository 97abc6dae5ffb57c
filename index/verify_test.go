package index

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestVerifyFindsInvisibleRecords: Verify is quiet on a healthy index and
// names a record whose modseq entry is gone or points elsewhere, and a
// tombstone likewise.
func TestVerifyFindsInvisibleRecords(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, ".Work")
	putFile(t, dir, "m1", "Subject: 1\n\none\n")
	putFile(t, dir, "m2", "Subject: 2\n\ntwo\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if bad := r.Verify(); len(bad) > 0 {
		t.Fatalf("healthy index reported: %v", bad)
	}
	box := boxNamed(t, r, "Work")
	corrupt := func(f func(bb *boxBuckets) error) {
		t.Helper()
		if err := r.store.db.Update(func(tx *bolt.Tx) error {
			bb, err := buckets(tx, box.GUID, false)
			if err != nil {
				return err
			}
			return f(bb)
		}); err != nil {
			t.Fatal(err)
		}
	}
	msgs := func() []*Msg {
		var out []*Msg
		_ = r.store.db.View(func(tx *bolt.Tx) error {
			var err error
			out, err = loadMsgs(tx, box.GUID)
			return err
		})
		return out
	}()
	if len(msgs) != 2 {
		t.Fatalf("records: %d", len(msgs))
	}
	// The second record's modseq entry now points at the first's UID.
	corrupt(func(bb *boxBuckets) error { return bb.mod.Put(u64(msgs[1].Modseq), u32(msgs[0].UID)) })
	bad := r.Verify()
	if len(bad) != 1 || !strings.Contains(bad[0], "points at UID") || !strings.Contains(bad[0], `mailbox "Work"`) {
		t.Fatalf("Verify: %q", bad)
	}
	corrupt(func(bb *boxBuckets) error { return bb.mod.Delete(u64(msgs[1].Modseq)) })
	if bad = r.Verify(); len(bad) != 1 || !strings.Contains(bad[0], "has no entry") {
		t.Fatalf("Verify: %q", bad)
	}
}

func boxNamed(t *testing.T, r *Replica, name string) *Box {
	t.Helper()
	var out *Box
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		boxes, err := allBoxes(tx)
		for _, b := range boxes {
			if b.Name == name {
				out = b
			}
		}
		return err
	})
	if out == nil {
		t.Fatalf("no mailbox %q in the index", name)
	}
	return out
}
