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
	if base != src {
		g := src
		for _, r := range readRecords(t, root, from) {
			if r.Base() == src {
				g = r.GUID()
			}
		}
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
