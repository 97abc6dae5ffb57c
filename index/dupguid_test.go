package index_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
)

// An index that an old bug left with two records of one message GUID in a
// mailbox (an apply stopped between the add of the peer's instance, under
// a fresh file name with a G field, and the expunge of the local one:
// design §7.6, seed 5769373144519208670) made every later sync fail
// ("message GUID listed twice"), and the mailbox's stamp spared it the
// full scan that could have told the files apart. The first open by a
// build with the repair marks the mailbox; its scan keeps the GUID for the
// file a scan without the index would give it, and reads the other file as
// the message it is. The syncs then converge, nothing lost.
func TestDoubledGUIDRecordIsRepaired(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "M")
	settle(t, a, b)
	// The disk as the interrupted apply left it: a second file of M under
	// a fresh base, listed at UID 2 with G = M.
	src := testmail.Find(t, a, "INBOX", m)
	fresh := "1700000099.M99P1.test,S=" + strings.SplitN(filepath.Base(src), ",S=", 2)[1]
	fresh = strings.SplitN(fresh, ":", 2)[0]
	if err := os.Link(src, filepath.Join(filepath.Dir(src), fresh+":2,")); err != nil {
		t.Fatal(err)
	}
	ul, _, err := maildir.ReadUidlist(a)
	if err != nil {
		t.Fatal(err)
	}
	rec := maildir.UidRecord{UID: 2, FileName: fresh + ":2,"}
	rec.Set('G', m)
	ul.Records = append(ul.Records, rec)
	ul.NextUID = 3
	if err := maildir.WriteUidlist(a, ul); err != nil {
		t.Fatal(err)
	}
	if err := index.AddDuplicateRecord(a, 1, 2, fresh+":2,"); err != nil {
		t.Fatal(err)
	}
	untilQuiet(t, a, b)
	for _, r := range []string{a, b} {
		files := testmail.Files(t, r, "INBOX")
		if len(files) != 2 || testmail.Find(t, r, "INBOX", m) == "" {
			t.Errorf("%s INBOX %v, want M and its second file", r, files)
		}
		if uids := testmail.UIDs(t, r, "INBOX"); !slices.Contains(sortedKeys(uids), 1) {
			t.Errorf("%s: M left UID 1: %v", r, uids)
		}
	}
	// Repaired once: the next open does not look again, nothing is marked.
	s := testmail.SyncClean(t, a, b)
	if s.ResultA.Added+s.ResultB.Added+s.ResultA.Expunged+s.ResultB.Expunged != 0 {
		t.Fatalf("sync after the repair did work: A=%+v B=%+v", s.ResultA, s.ResultB)
	}
}

func sortedKeys(m map[uint32]string) []uint32 {
	var k []uint32
	for u := range m {
		k = append(k, u)
	}
	slices.Sort(k)
	return k
}
