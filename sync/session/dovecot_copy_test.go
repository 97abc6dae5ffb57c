package session_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// What Dovecot does to a Maildir for COPY and MOVE, without Dovecot: a
// hard link (under the source's base name when the target mailbox has no
// file of that name and its uidlist lists no record of it, an expunged
// message's record included, else under a new one whose uidlist record
// names the source's GUID in its G field), the next UID in the target's
// uidlist, and for MOVE the source's file and record removed (the record
// as when Dovecot then recreates the uidlist).

// dovecotCopy copies the message with base src of mailbox from into
// mailbox to and returns the new file's base name.
func dovecotCopy(t *testing.T, root, from, to, src, newBase string) string {
	t.Helper()
	path := testmail.Find(t, root, from, src)
	if path == "" {
		t.Fatalf("%s: no message %s", from, src)
	}
	dst := testmail.Dir(t, root, to)
	if err := maildir.CreateMailboxDirs(dst); err != nil {
		t.Fatal(err)
	}
	ul, _, err := maildir.ReadUidlist(dst)
	if errors.Is(err, fs.ErrNotExist) {
		ul = &maildir.Uidlist{Version: 3, UIDValidity: uint32(time.Now().Unix()), NextUID: 1, GUID: maildir.NewGUID()}
	} else if err != nil {
		t.Fatal(err)
	}
	base := src
	if testmail.FindFile(t, root, to, src) != "" {
		base = newBase
	}
	for _, r := range ul.Records {
		if r.Base() == src {
			base = newBase // (maildir-save.c: a listed name is not taken)
		}
	}
	name := base + ":2,"
	if err := os.Link(path, filepath.Join(dst, "cur", name)); err != nil {
		t.Fatal(err)
	}
	rec := maildir.UidRecord{UID: ul.NextUID, FileName: name}
	// The copy keeps the message's GUID: in a G field wherever it is not
	// the new file's base name (Dovecot writes the mail's GUID there).
	g := src
	for _, r := range readRecords(t, root, from) {
		if r.Base() == src {
			g = r.GUID()
		}
	}
	if g != base {
		rec.Set('G', g)
	}
	ul.Records = append(ul.Records, rec)
	ul.NextUID++
	if err := maildir.WriteUidlist(dst, ul); err != nil {
		t.Fatal(err)
	}
	return base
}

func readRecords(t *testing.T, root, mailbox string) []maildir.UidRecord {
	t.Helper()
	ul, _, err := maildir.ReadUidlist(testmail.Dir(t, root, mailbox))
	if err != nil {
		t.Fatal(err)
	}
	return ul.Records
}

// dovecotExpunge removes the message with base b from mailbox: its file
// and its uidlist record.
func dovecotExpunge(t *testing.T, root, mailbox, b string) {
	t.Helper()
	dir := testmail.Dir(t, root, mailbox)
	if p := testmail.Find(t, root, mailbox, b); p != "" {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	kept := ul.Records[:0]
	for _, r := range ul.Records {
		if r.Base() != b {
			kept = append(kept, r)
		}
	}
	ul.Records = kept
	if err := maildir.WriteUidlist(dir, ul); err != nil {
		t.Fatal(err)
	}
}

// bodies returns UID -> body of a mailbox, from its uidlist and files, as
// Dovecot reads them: a record's file is the one of its base name, and a
// record without one is an expunged message's.
func bodies(t *testing.T, root, mailbox string) map[uint32]string {
	t.Helper()
	out := map[uint32]string{}
	for _, r := range readRecords(t, root, mailbox) {
		if p := testmail.FindFile(t, root, mailbox, r.Base()); p != "" {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[r.UID] = string(b)
		}
	}
	return out
}

// uidMeanings records, per replica and mailbox, the body each UID ever
// showed, and fails the test when one shows another (contract §3.1).
type uidMeanings map[string]string

func (u uidMeanings) observe(t *testing.T, root, side string, mailboxes ...string) {
	t.Helper()
	for _, mb := range mailboxes {
		for uid, body := range bodies(t, root, mb) {
			k := fmt.Sprintf("%s/%s/%d", side, mb, uid)
			if old, ok := u[k]; ok && old != body {
				t.Errorf("%s %s UID %d held %q, now %q", side, mb, uid, firstLine(old), firstLine(body))
			}
			u[k] = body
		}
	}
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "Subject:") {
			return strings.TrimSpace(l)
		}
	}
	return s
}

func sameBodies(t *testing.T, a, b string, mailboxes ...string) {
	t.Helper()
	for _, mb := range mailboxes {
		ba, bb := bodies(t, a, mb), bodies(t, b, mb)
		if len(ba) != len(bb) {
			t.Errorf("%s: A has %d messages, B %d", mb, len(ba), len(bb))
		}
		for uid, x := range ba {
			if y, ok := bb[uid]; !ok || x != y {
				t.Errorf("%s UID %d: A %q, B %q", mb, uid, firstLine(x), firstLine(y))
			}
		}
	}
}

// A copy within a mailbox (G field naming the original) whose original is
// then expunged keeps its UID and its identity on both replicas.
func TestDovecotCopyThenOriginalExpunged(t *testing.T) {
	a, b := roots(t)
	seen := uidMeanings{}
	x := testmail.Deliver(t, a, "INBOX", "original")
	testmail.Deliver(t, b, "INBOX", "other side")
	settle(t, a, b)
	cp := dovecotCopy(t, a, "INBOX", "INBOX", x, "1800000000.M1P1.copy,S=1")
	settle(t, a, b)
	seen.observe(t, a, "A", "INBOX")
	seen.observe(t, b, "B", "INBOX")
	dovecotExpunge(t, a, "INBOX", x)
	settle(t, a, b)
	seen.observe(t, a, "A", "INBOX")
	seen.observe(t, b, "B", "INBOX")
	sameBodies(t, a, b, "INBOX")
	if n := len(bodies(t, b, "INBOX")); n != 2 {
		t.Errorf("B INBOX has %d messages; want 2 (the other side's and the copy %s)", n, cp)
	}
}

// Dovecot's MOVE to another mailbox keeps the base name: a message moved
// out of a mailbox and back comes back under its old name, while a copy
// made before holds its GUID (by the G field). The returning message was
// left out of the sync for good ("a message's GUID and file name are both
// taken"): found by the IMAP stress test. It must replicate, and no UID
// may change its body.
func TestDovecotMoveOutAndBackBesideACopy(t *testing.T) {
	a, b := roots(t)
	seen := uidMeanings{}
	x := testmail.Deliver(t, a, "INBOX", "travels")
	settle(t, a, b)
	dovecotCopy(t, a, "INBOX", "INBOX", x, "1800000000.M1P1.copy,S=1")
	settle(t, a, b)
	// MOVE to Work (same base there), then back (same base again).
	if got := dovecotCopy(t, a, "INBOX", "Work", x, "unused"); got != x {
		t.Fatalf("moved under %s", got)
	}
	dovecotExpunge(t, a, "INBOX", x)
	settle(t, a, b)
	seen.observe(t, a, "A", "INBOX", "Work")
	seen.observe(t, b, "B", "INBOX", "Work")
	if got := dovecotCopy(t, a, "Work", "INBOX", x, "unused"); got != x {
		t.Fatalf("moved back under %s", got)
	}
	dovecotExpunge(t, a, "Work", x)
	settle(t, a, b)
	seen.observe(t, a, "A", "INBOX", "Work")
	seen.observe(t, b, "B", "INBOX", "Work")
	sameBodies(t, a, b, "INBOX", "Work")
	if n := len(bodies(t, b, "INBOX")); n != 2 {
		t.Errorf("B INBOX has %d messages; want 2 (the copy and the returned original)", n)
	}
	// And once more, the other way round on B.
	dovecotCopy(t, b, "INBOX", "Work", x, "unused")
	dovecotExpunge(t, b, "INBOX", x)
	settle(t, a, b)
	dovecotCopy(t, b, "Work", "INBOX", x, "unused")
	dovecotExpunge(t, b, "Work", x)
	settle(t, a, b)
	seen.observe(t, a, "A", "INBOX", "Work")
	seen.observe(t, b, "B", "INBOX", "Work")
	sameBodies(t, a, b, "INBOX", "Work")
}

// A message that leaves a mailbox and comes back (a client on B moves it
// out and back) does not get its old file name in that mailbox on A: a
// Dovecot process on A may still hold that name under the old UID and
// would log "Duplicate file entry" / "Expunged message reappeared".
func TestReturningMessageGetsANewNameOnThePeer(t *testing.T) {
	a, b := roots(t)
	x := testmail.Deliver(t, a, "INBOX", "leaves and returns")
	settle(t, a, b)
	dovecotCopy(t, b, "INBOX", "Work", x, "unused")
	dovecotExpunge(t, b, "INBOX", x)
	settle(t, a, b)
	if testmail.FindFile(t, a, "INBOX", x) != "" {
		t.Fatalf("A: %s still in INBOX after the move out", x)
	}
	dovecotCopy(t, b, "Work", "INBOX", x, "unused")
	dovecotExpunge(t, b, "Work", x)
	settle(t, a, b)
	if testmail.Find(t, a, "INBOX", x) == "" {
		t.Fatalf("A: %s did not come back to INBOX", x)
	}
	if testmail.FindFile(t, a, "INBOX", x) != "" {
		t.Fatalf("A: %s came back to INBOX under its old file name", x)
	}
}

// dovecotMove moves the message with base src of mailbox from into
// mailbox to as Dovecot does (dovecotCopy, then the source's file goes and
// its uidlist record stays, as Dovecot keeps an expunged message's record
// until it recreates the list) and returns its base name in to.
func dovecotMove(t *testing.T, root, from, to, src, newBase string) string {
	t.Helper()
	base := dovecotCopy(t, root, from, to, src, newBase)
	if err := os.Remove(testmail.Find(t, root, from, src)); err != nil {
		t.Fatal(err)
	}
	return base
}

// TestMovedOutOnBothSidesAndBackOnOneIsNotLost: B moves a message from
// INBOX to Work; A's MOVE copies it to Work (A's scan sees that copy, born
// after B's) and removes it from INBOX; before A's next scan a client on A
// moves it back to INBOX, where Dovecot saves it under a new file name at
// a new UID (INBOX still lists the old name's record), the GUID in the G
// field, and later drops the old record. A's scan took the returned copy
// for a renumbering of the old INBOX record (keeping that instance's Born
// and its UID's path), so B's expunge of the old INBOX record reached it,
// and A's expunge of its Work copy, born after B's Work copy, killed B's:
// no copy was left anywhere (race8's IMAP stress run, 2.3 seed
// 1795930060074030601). A file of another name at a new UID is a new copy.
func TestMovedOutOnBothSidesAndBackOnOneIsNotLost(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Work", "another")
	settle(t, a, b)
	// Delivered to indexes that exist: Born stamps known.
	x := testmail.Deliver(t, a, "INBOX", "moved out on both sides, back on one")
	settle(t, a, b)
	// B moves it to Work; B's scan sees its Work copy.
	dovecotMove(t, b, "INBOX", "Work", x, "unused")
	sync2(t, b, filepath.Join(t.TempDir(), "scratch-b"))
	time.Sleep(2 * time.Millisecond)
	// A's MOVE: the copy into Work, which A's scan sees (born after B's),
	// then the INBOX file goes.
	dovecotCopy(t, a, "INBOX", "Work", x, "unused")
	sync2(t, a, filepath.Join(t.TempDir(), "scratch-a"))
	if err := os.Remove(testmail.Find(t, a, "INBOX", x)); err != nil {
		t.Fatal(err)
	}
	// Before A's next scan a client on A moves it back: a new name in
	// INBOX (which still lists the old name's record), the GUID in the G
	// field.
	back := dovecotMove(t, a, "Work", "INBOX", x, "1800000000.M1P1.back,S=1")
	if back == x {
		t.Fatalf("moved back under its old name %s", back)
	}
	// Dovecot recreates INBOX's uidlist: the old name's record goes.
	ul := testmail.Uidlist(t, a, "INBOX")
	kept := ul.Records[:0]
	for _, r := range ul.Records {
		if r.Base() != x {
			kept = append(kept, r)
		}
	}
	ul.Records = kept
	if err := maildir.WriteUidlist(testmail.Dir(t, a, "INBOX"), ul); err != nil {
		t.Fatal(err)
	}
	if s := testmail.Sync(t, a, b, session.Options{DryRun: true}); testing.Verbose() {
		for _, l := range s.PlanText {
			t.Log(l)
		}
	}
	testmail.SyncUntilQuiet(t, a, b, session.Options{}, 5)
	testmail.Converged(t, a, b)
	for _, r := range []string{a, b} {
		n := 0
		for _, mb := range []string{"INBOX", "Work"} {
			for _, rec := range readRecords(t, r, mb) {
				if rec.GUID() == x && testmail.FindFile(t, r, mb, rec.Base()) != "" {
					n++
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: the message is lost (INBOX %v, Work %v)", r, testmail.Files(t, r, "INBOX"), testmail.Files(t, r, "Work"))
		}
	}
}
