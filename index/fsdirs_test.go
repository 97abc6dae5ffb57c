package index

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// A Dovecot lock that stays held past the lock timeout (in the stress
// test: a lock stranded in a folder that moved) ends the apply as skipped,
// exit 2 with a message that says so, not as a failed sync (exit 1).
func TestLockTimeoutEndsApplyAsRunAgain(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	work := filepath.Join(root, ".Work")
	m := putFile(t, work, "1700000001.M1P1.test,S=10", "body one\r\n")
	r, err := Open(ctx, maildir.Location{Root: root}, Options{Hostname: "test", LockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ul, _, err := maildir.ReadUidlist(work)
	if err != nil {
		t.Fatal(err)
	}
	// Dovecot's lock, fresh, and not twinbox's.
	if err := os.WriteFile(filepath.Join(work, "dovecot-uidlist.lock"), []byte("1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	plan := &merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: model.MailboxGUID(ul.GUID), UIDNext: 2,
		Flags: []merge.FlagSet{{UID: 1, GUID: m, Flags: model.Flags{model.FlagSeen: {Set: true, T: 1}}}}}}}
	res, err := r.Apply(ctx, plan, nil)
	if err != nil {
		t.Fatalf("apply with a lock held by Dovecot: %v (want skipped, exit 2)", err)
	}
	if !res.Changed || len(res.Skipped) == 0 || !strings.Contains(strings.Join(res.Skipped, "\n"), "lock") {
		t.Fatalf("apply result %+v: want a skip that names the lock", res)
	}
}

// A mailbox that a killed apply left renamed aside (under a hidden name,
// invisible to Dovecot) is found by the next scan and moved back to the
// directory of its name; it is neither lost nor taken for a new mailbox.
func TestAsideMailboxMovedBack(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	work := filepath.Join(root, ".Work")
	putFile(t, work, "1700000001.M1P1.test,S=10", "body one\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ul, _, err := maildir.ReadUidlist(work)
	if err != nil {
		t.Fatal(err)
	}
	g := model.MailboxGUID(ul.GUID)
	aside, _ := r.tmpDirFor(g)
	if err := os.Rename(work, aside); err != nil {
		t.Fatal(err)
	}
	if all, _ := r.loc.ListMailboxes(); len(all) != 1 {
		t.Fatalf("the aside mailbox is listed (Dovecot would show it): %v", all)
	}
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(work, "cur", "1700000001.M1P1.test,S=10:2,")); err != nil {
		t.Fatalf("not moved back: %v", err)
	}
	if _, err := os.Stat(aside); err == nil {
		t.Fatalf("%s still there", aside)
	}
	b, err := r.getBox(g)
	if err != nil || b == nil || b.Missing || b.Deleted || b.Name != "Work" || b.Dir != ".Work" || b.Messages != 1 {
		t.Fatalf("box after the scan: %+v, %v", b, err)
	}
}

// A mailbox the plan deletes goes out of Dovecot's listing by one rename
// (no half-removed folder to see), and nothing of it stays behind.
func TestDeleteLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	work := filepath.Join(root, ".Work")
	putFile(t, work, "1700000001.M1P1.test,S=10", "body one\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ul, _, _ := maildir.ReadUidlist(work)
	g := model.MailboxGUID(ul.GUID)
	// The message is expunged first (a delete never takes mail with it).
	if err := os.Remove(filepath.Join(work, "cur", "1700000001.M1P1.test,S=10:2,")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := r.Apply(ctx, &merge.SidePlan{Deletes: []merge.MailboxOp{{GUID: g, Name: "Work", DeletedT: 1}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.MailboxOps != 1 {
		t.Fatalf("delete not done: %+v", res)
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".Work") || strings.HasPrefix(e.Name(), maildir.HiddenPrefix) {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// deletingSource is a peer whose Fetch finds the receiving folder deleted
// by a client before the bodies arrive.
type deletingSource struct {
	t         *testing.T
	root, dir string
	body      string
	fnErr     error // what the receiving side answered a body with
}

func (s *deletingSource) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	clientDeletes(s.t, s.root, s.dir)
	for i := range refs {
		if err := fn(i, strings.NewReader(s.body)); err != nil {
			s.fnErr = err
			return err
		}
	}
	return nil
}

// A client deletes the folder that bodies are streaming into: the body
// write fails in the vanished tmp/, and the sync skips it (exit 2) instead
// of breaking the stream (the stress test saw "apply: EOF", exit 1).
func TestFolderDeletedWhileBodiesStream(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	work := filepath.Join(root, ".Work")
	putFile(t, work, "1700000001.M1P1.test,S=10", "body one\r\n")
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ul, _, _ := maildir.ReadUidlist(work)
	g := model.MailboxGUID(ul.GUID)
	body := "body two\r\n"
	plan := &merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: g, UIDNext: 3, Adds: []merge.Add{{
		Msg:       model.Message{GUID: "1700000002.M2P1.peer,S=10", UID: 2, Size: int64(len(body))},
		SourceBox: g, SourceUID: 2,
	}}}}}
	src := &deletingSource{t: t, root: root, dir: work, body: body}
	res, err := r.Apply(ctx, plan, src)
	if src.fnErr != nil {
		t.Errorf("the body stream was broken (a peer over the wire would see EOF): %v", src.fnErr)
	}
	if err != nil {
		t.Fatalf("apply: %v (want skipped, exit 2)", err)
	}
	if !res.Changed || len(res.Skipped) == 0 {
		t.Fatalf("apply result %+v: want skipped", res)
	}
	if _, err := os.Stat(work); err == nil {
		t.Errorf("the deleted folder was made again")
	}
}
