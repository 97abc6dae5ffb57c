package index

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

// clientDeletes removes a mailbox the way Dovecot's DELETE does: the
// directory goes and dovecot.mailbox.log records the delete.
func clientDeletes(t *testing.T, root, dir string) model.MailboxGUID {
	t.Helper()
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := maildir.AppendMailboxLog(root, []maildir.LogRecord{{Type: maildir.LogDeleteMailbox, GUID: ul.GUID, Time: time.Now().Add(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	return model.MailboxGUID(ul.GUID)
}

// A client deletes a mailbox between the scan and the apply of a sync that
// changes it or merges it into the peer's: the apply skips it (exit 2; the
// next sync sees the delete) instead of failing ('locating mailbox to
// merge: file does not exist', exit 1) or making the directory again. Found
// by the IMAP stress test with folder operations.
func TestMailboxDeletedDuringApplyIsSkipped(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	work, other := filepath.Join(root, ".Work"), filepath.Join(root, ".Other")
	m := putFile(t, work, "1700000001.M1P1.test,S=10", "body one\r\n")
	putFile(t, other, "1700000002.M2P1.test,S=10", "body two\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	g := clientDeletes(t, root, work)
	og := clientDeletes(t, root, other)

	flags := &merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: g, UIDNext: 2, Flags: []merge.FlagSet{{UID: 1, GUID: m, Flags: model.Flags{model.FlagSeen: {Set: true, T: 1}}}}}}}
	res, err := r.Apply(ctx, flags, nil)
	if err != nil {
		t.Fatalf("apply of a flag change: %v", err)
	}
	if len(res.Skipped) == 0 {
		t.Errorf("apply of a flag change: nothing skipped")
	}
	if _, err := os.Stat(work); err == nil {
		t.Errorf("the deleted mailbox was made again")
	}

	to := model.MailboxGUID{9, 9, 9}
	adopt := &merge.SidePlan{
		Adopts: []merge.Adopt{{From: og, To: to, Name: "Other", NameT: 1, UIDValidity: 7}},
		Boxes:  []merge.BoxPlan{{GUID: to, UIDNext: 2}},
	}
	res, err = r.Apply(ctx, adopt, nil)
	if err != nil {
		t.Fatalf("apply of a merge: %v", err)
	}
	if len(res.Skipped) == 0 {
		t.Errorf("apply of a merge: nothing skipped")
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("the deleted mailbox was made again by the merge")
	}
}

// A message added under a new base name (its own is taken in the mailbox)
// whose virtual size is unknown (an MTA's file name has no ,W=) got ",W=0"
// in its new name, and Dovecot served it as an empty body (it trusts W= for
// the size of the message with CRLF line ends): found by the IMAP test of a
// Dovecot busy during a sync.
func TestNewBaseWithoutVirtualSizeHasNoW(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	x := putFile(t, root, "1700000001.M1P1.mta,S=10", "body one\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	g := inboxGUID(t, root)
	sp := &merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: g, UIDNext: 3, Adds: []merge.Add{{Msg: model.Message{UID: 2, GUID: x, Base: x, Size: 10, Mtime: time.Now().UnixNano()}}}}}}
	// An add whose base name is taken here (x is UID 1): it gets a new
	// name; its body is linked from x.
	res, err := r.Apply(ctx, sp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Added != 1 {
		t.Fatalf("added %d (skipped %q)", res.Added, res.Skipped)
	}
	ul, _, err := maildir.ReadUidlist(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range ul.Records {
		if rec.UID == 2 {
			if rec.Base() == x || strings.Contains(rec.FileName, ",W=") {
				t.Errorf("new file name %q", rec.FileName)
			}
			return
		}
	}
	t.Errorf("no UID 2 in %+v", ul.Records)
}
