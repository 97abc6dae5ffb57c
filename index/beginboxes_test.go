package index

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// beginMatchesIndex checks that Begin's mailboxes (taken from the scan's
// last read) are what a fresh read of the index gives, in the same order,
// and nil when there are none (as the JSON reply was before).
func beginMatchesIndex(t *testing.T, r *Replica, step string) *replica.BeginReply {
	t.Helper()
	rep, err := r.Begin(context.Background(), replica.BeginRequest{})
	if err != nil {
		t.Fatalf("%s: Begin: %v", step, err)
	}
	boxes, err := r.loadBoxes()
	if err != nil {
		t.Fatal(err)
	}
	var want []model.Mailbox
	for _, b := range boxes {
		want = append(want, b.Mailbox)
	}
	if !reflect.DeepEqual(rep.Mailboxes, want) {
		t.Fatalf("%s: Begin reports mailboxes\n%+v\nthe index holds\n%+v", step, rep.Mailboxes, want)
	}
	// Epochs (an apply's reply): every mailbox's epoch, never a nil map.
	ep := map[model.MailboxGUID]uint64{}
	for _, b := range boxes {
		ep[b.GUID] = b.Epoch
	}
	if got := r.Epochs(); got == nil || !reflect.DeepEqual(got, ep) {
		t.Fatalf("%s: Epochs() = %v, want %v", step, got, ep)
	}
	return rep
}

// TestBeginMailboxesAreTheIndexAfterScan: Begin reuses the scan's final
// read of the mailbox records; after scans that change them (new
// messages, a new folder, a folder gone, a rename) its reply must still
// equal a fresh read.
func TestBeginMailboxesAreTheIndexAfterScan(t *testing.T) {
	root := t.TempDir()
	r := openTestReplica(t, root)
	if rep := beginMatchesIndex(t, r, "empty root"); len(rep.Mailboxes) > 1 {
		t.Fatalf("empty root: %d mailboxes", len(rep.Mailboxes))
	}
	putFile(t, root, "1.M1P1.h", "Subject: a\n\na\n")
	putFile(t, filepath.Join(root, ".A"), "2.M2P2.h", "Subject: b\n\nb\n")
	putFile(t, filepath.Join(root, ".B.C"), "3.M3P3.h", "Subject: c\n\nc\n")
	rep := beginMatchesIndex(t, r, "first scan")
	if len(rep.Mailboxes) != 3 {
		t.Fatalf("first scan: %d mailboxes, want 3: %+v", len(rep.Mailboxes), rep.Mailboxes)
	}
	beginMatchesIndex(t, r, "no change")
	putFile(t, filepath.Join(root, ".A"), "4.M4P4.h", "Subject: d\n\nd\n")
	putFile(t, filepath.Join(root, ".D"), "5.M5P5.h", "Subject: e\n\ne\n")
	rep = beginMatchesIndex(t, r, "new message and folder")
	var modA uint64
	for _, b := range rep.Mailboxes {
		if b.Name == "A" {
			modA = b.Modseq
		}
	}
	if modA == 0 {
		t.Fatalf("mailbox A missing or without modseq: %+v", rep.Mailboxes)
	}
	if err := os.RemoveAll(filepath.Join(root, ".B.C")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, ".D"), filepath.Join(root, ".E")); err != nil {
		t.Fatal(err)
	}
	beginMatchesIndex(t, r, "folder gone, folder renamed")
	beginMatchesIndex(t, r, "no change again")
}
