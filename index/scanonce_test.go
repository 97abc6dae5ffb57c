package index

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
)

// A folder without a dovecot-uidlist (as an MTA leaves it) gets its
// identity and its files' UIDs in one uidlist write, and those messages,
// given their UIDs by this scan of a new index, are born now (a known
// stamp), not "listed before, born when unknown".
func TestNewUidlistWrittenOnce(t *testing.T) {
	root := t.TempDir()
	work := filepath.Join(root, ".Work")
	for i, dir := range []string{root, work} {
		for j := 0; j < 3; j++ {
			putFile(t, dir, fmt.Sprintf("17000000%02d.M%dP%d.mta,S=6", j, j, i), "body\r\n")
		}
	}
	r := openTestReplica(t, root)
	writes := 0
	restore := testHookUidlistWrite
	testHookUidlistWrite = func(string) { writes++ }
	defer func() { testHookUidlistWrite = restore }()
	if _, err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if writes != 2 {
		t.Fatalf("%d uidlist writes for two new mailboxes, want one each", writes)
	}
	for _, dir := range []string{root, work} {
		ul, _, err := maildir.ReadUidlist(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ul.Records) != 3 || ul.NextUID != 4 || ul.GUID == [16]byte{} {
			t.Fatalf("%s: uidlist %+v", dir, ul)
		}
		for k, rec := range ul.Records {
			if want := fmt.Sprintf("17000000%02d.", k); rec.UID != uint32(k+1) || rec.FileName[:len(want)] != want {
				t.Fatalf("%s: record %d is UID %d %s, want UID %d for %s*", dir, k, rec.UID, rec.FileName, k+1, want)
			}
		}
		_ = r.store.db.View(func(tx *bolt.Tx) error {
			msgs, err := loadMsgs(tx, model.MailboxGUID(ul.GUID))
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 3 {
				t.Fatalf("%s: %d index records", dir, len(msgs))
			}
			for _, m := range msgs {
				if m.Born <= 0 {
					t.Errorf("%s UID %d: born %d, want a known stamp (given its UID now)", dir, m.UID, m.Born)
				}
			}
			return nil
		})
	}
	if _, err := os.Stat(filepath.Join(work, "dovecot-uidlist")); err != nil {
		t.Fatal(err)
	}
}
