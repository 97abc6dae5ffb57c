package index

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// Dovecot's COPY within a mailbox makes a new file whose uidlist record
// names the original's GUID (G field); while the original is there the copy
// is known by its own base name. When the original was expunged, the next
// scan gave the copy the original's GUID: its UID changed message (a
// tombstone for the copy, the original "renumbered" to the copy's UID), and
// the replicas disagreed about that UID for good (the flag changes planned
// for it were never found, every sync exited 2): found by the IMAP stress
// test. A message keeps the GUID the index knows it by.
func TestCopyKeepsItsGUIDWhenTheOriginalIsExpunged(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	orig := putFile(t, root, "1700000001.M1P1.test,S=10", "body one\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	g := inboxGUID(t, root)
	// Dovecot's COPY: a hard link under a new name, G = the original's GUID.
	cp := "1700000002.M2P1.test,S=10"
	if err := os.Link(filepath.Join(root, "cur", orig+":2,"), filepath.Join(root, "cur", cp+":2,")); err != nil {
		t.Fatal(err)
	}
	ul, _, err := maildir.ReadUidlist(root)
	if err != nil {
		t.Fatal(err)
	}
	rec := maildir.UidRecord{UID: ul.NextUID, FileName: cp + ":2,"}
	rec.Set('G', orig)
	ul.Records = append(ul.Records, rec)
	ul.NextUID++
	if err := maildir.WriteUidlist(root, ul); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ch, err := r.Changes(ctx, replica.ChangesRequest{Boxes: []replica.BoxSince{{GUID: g}}})
	if err != nil {
		t.Fatal(err)
	}
	before := map[uint32]string{}
	for _, m := range ch[g].Messages {
		before[m.UID] = m.GUID
	}
	if before[1] != orig || before[2] != cp {
		t.Fatalf("after the copy: %v", before)
	}
	modseq := uint64(0)
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		b, _ := getBox(tx, g)
		modseq = b.Modseq
		return nil
	})
	// A client expunges the original.
	if err := os.Remove(filepath.Join(root, "cur", orig+":2,")); err != nil {
		t.Fatal(err)
	}
	ul.Records = ul.Records[1:]
	if err := maildir.WriteUidlist(root, ul); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ch, err = r.Changes(ctx, replica.ChangesRequest{Boxes: []replica.BoxSince{{GUID: g, Since: modseq}}})
	if err != nil {
		t.Fatal(err)
	}
	c := ch[g]
	if len(c.Messages) != 0 {
		t.Errorf("changed messages after the expunge: %+v; want none", c.Messages)
	}
	if len(c.Tombstones) != 1 || c.Tombstones[0].UID != 1 || c.Tombstones[0].GUID != orig || c.Tombstones[0].MovedTo != 0 {
		t.Errorf("tombstones after the expunge: %+v; want an expunge of UID 1 (%s)", c.Tombstones, orig)
	}
}
