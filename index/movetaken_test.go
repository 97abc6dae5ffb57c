package index

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// putFile writes a message file into dir/cur with the given base name and
// returns the base.
func putFile(t *testing.T, dir, base, body string) string {
	t.Helper()
	if err := maildir.CreateMailboxDirs(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cur", base+":2,"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return base
}

// dovecotAssigns appends uidlist records for files, as Dovecot does when
// it saves a message: each gets the uidlist's next UID.
func dovecotAssigns(t *testing.T, dir string, files ...string) []uint32 {
	t.Helper()
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	var uids []uint32
	for _, f := range files {
		ul.Records = append(ul.Records, maildir.UidRecord{UID: ul.NextUID, FileName: f + ":2,"})
		uids = append(uids, ul.NextUID)
		ul.NextUID++
	}
	if err := maildir.WriteUidlist(dir, ul); err != nil {
		t.Fatal(err)
	}
	return uids
}

func openTestReplica(t *testing.T, root string) *Replica {
	t.Helper()
	r, err := Open(context.Background(), maildir.Location{Root: root}, Options{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func inboxGUID(t *testing.T, root string) model.MailboxGUID {
	t.Helper()
	ul, _, err := maildir.ReadUidlist(root)
	if err != nil {
		t.Fatal(err)
	}
	return model.MailboxGUID(ul.GUID)
}

// fetchOne returns the body the replica serves for ref ("" if none).
func fetchOne(t *testing.T, r *Replica, ref replica.BodyRef) string {
	t.Helper()
	var got string
	err := r.Fetch(context.Background(), []replica.BodyRef{ref}, func(i int, rd io.Reader) error {
		b, err := io.ReadAll(rd)
		got = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A sync renumbers a message (a Move in the plan) to a UID that Dovecot
// gave to a new message after the scan. The apply skipped the move on disk
// but recorded it in the index: the new UID named the moved message's GUID
// with the other message's file. The replica then served the other
// message's body for that GUID (to a peer's fetch, or to a local link), so
// one UID held different bodies on the two replicas: found by the IMAP
// stress test. The move must be skipped in the index as well, the message
// keep its UID, and the body served for its GUID be its own.
func TestMoveToUIDTakenSinceScanIsSkipped(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	one := putFile(t, root, "1700000001.M1P1.test,S=10", "body one\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	g := inboxGUID(t, root)
	// Dovecot, after the scan: a new message, same size, at UID 2.
	two := putFile(t, root, "1700000002.M2P1.test,S=10", "body two\r\n")
	if uids := dovecotAssigns(t, root, two); uids[0] != 2 {
		t.Fatalf("Dovecot's UID %v", uids)
	}
	// The plan, made from the scan: UID 1 moves to 2.
	sp := &merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: g, UIDNext: 3, Moves: []merge.Move{{GUID: one, From: 1, To: 2}}}}}
	res, err := r.Apply(ctx, sp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != 0 || len(res.Skipped) == 0 {
		t.Errorf("apply: moved %d, skipped %q; want the move skipped", res.Moved, res.Skipped)
	}
	ul, _, err := maildir.ReadUidlist(root)
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[uint32]string{}
	for _, rec := range ul.Records {
		onDisk[rec.UID] = rec.Base()
	}
	if onDisk[1] != one || onDisk[2] != two {
		t.Errorf("uidlist after the apply: %v; want 1=%s 2=%s", onDisk, one, two)
	}
	// What the replica serves for the message, by its old and its planned UID.
	for _, uid := range []uint32{1, 2} {
		if got := fetchOne(t, r, replica.BodyRef{Box: g, UID: uid, GUID: one, Size: 10}); got != "" && got != "body one\r\n" {
			t.Errorf("fetch of %s (UID %d) served %q", one, uid, got)
		}
	}
	// The index: each UID names the message of its own file.
	if err := r.store.db.View(func(tx *bolt.Tx) error {
		msgs, err := loadMsgs(tx, g)
		for _, m := range msgs {
			if b := m.fileBase(); b != onDisk[m.UID] || baseOf(m.File) != b {
				t.Errorf("index: UID %d is %s with file %s; the uidlist has %s there", m.UID, m.GUID, m.File, onDisk[m.UID])
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// And after the next scan, too.
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ch, err := r.Changes(ctx, replica.ChangesRequest{Boxes: []replica.BoxSince{{GUID: g}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ch[g].Messages {
		got = append(got, fmt.Sprintf("%d=%s", m.UID, m.GUID))
	}
	if want := fmt.Sprintf("1=%s 2=%s", one, two); strings.Join(got, " ") != want {
		t.Errorf("after the next scan: %v; want %s", got, want)
	}
}

// Two moves where the second goes to the UID the first vacates: when the
// first cannot be made (its UID was taken since the scan), neither can the
// second, and every message keeps its UID.
func TestMoveChainSkippedWhenItsHeadIsTaken(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	one := putFile(t, root, "1700000001.M1P1.test,S=10", "body one\r\n")
	two := putFile(t, root, "1700000002.M2P1.test,S=10", "body two\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	g := inboxGUID(t, root)
	three := putFile(t, root, "1700000003.M3P1.test,S=10", "body 3!\r\n\r\n")
	dovecotAssigns(t, root, three) // UID 3
	sp := &merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: g, UIDNext: 4, Moves: []merge.Move{{GUID: two, From: 2, To: 1}, {GUID: one, From: 1, To: 3}}}}}
	res, err := r.Apply(ctx, sp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != 0 {
		t.Errorf("apply moved %d; want none (skipped %q)", res.Moved, res.Skipped)
	}
	ul, _, err := maildir.ReadUidlist(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rec := range ul.Records {
		got = append(got, fmt.Sprintf("%d=%s", rec.UID, rec.Base()))
	}
	if want := fmt.Sprintf("1=%s 2=%s 3=%s", one, two, three); strings.Join(got, " ") != want {
		t.Errorf("uidlist %v; want %s", got, want)
	}
	for _, c := range []struct {
		uid  uint32
		guid string
		body string
	}{{1, one, "body one\r\n"}, {2, two, "body two\r\n"}} {
		if got := fetchOne(t, r, replica.BodyRef{Box: g, UID: c.uid, GUID: c.guid, Size: 10}); got != c.body {
			t.Errorf("fetch of UID %d served %q, want %q", c.uid, got, c.body)
		}
	}
}

// Defence in depth: an index record whose file name is another message's
// (however the index got there) never lends that file's body to its GUID,
// neither to a peer's fetch nor to a local link; the body comes from the
// peer instead.
func TestRecordNamingAnotherFileServesNoBody(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	one := putFile(t, root, "1700000001.M1P1.test,S=10", "body one\r\n")
	two := putFile(t, root, "1700000002.M2P1.test,S=10", "body two\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	g := inboxGUID(t, root)
	if err := os.Remove(filepath.Join(root, "cur", one+":2,")); err != nil {
		t.Fatal(err)
	}
	// UID 1 still says message one, but with message two's file.
	if err := r.store.db.Update(func(tx *bolt.Tx) error {
		b, err := getBox(tx, g)
		if err != nil {
			return err
		}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		m, err := bt.get(1)
		if err != nil || m == nil || m.GUID != one {
			return fmt.Errorf("UID 1: %+v %v", m, err)
		}
		m.File = two + ":2,"
		if err := bt.put(m); err != nil {
			return err
		}
		return putBox(tx, b)
	}); err != nil {
		t.Fatal(err)
	}
	if got := fetchOne(t, r, replica.BodyRef{Box: g, UID: 1, GUID: one, Size: 10}); got != "" {
		t.Errorf("fetch of %s served %q; want nothing", one, got)
	}
	if err := r.store.db.View(func(tx *bolt.Tx) error {
		if p := r.localFile(tx, one, g, 10); p != "" {
			t.Errorf("localFile(%s) = %s; want none", one, p)
		}
		if p := r.localFile(tx, two, g, 10); baseOf(filepath.Base(p)) != two {
			t.Errorf("localFile(%s) = %q; want its own file", two, p)
		}
		if p := r.localFile(tx, two, g, 11); p != "" {
			t.Errorf("localFile(%s) of another size = %s; want none", two, p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
