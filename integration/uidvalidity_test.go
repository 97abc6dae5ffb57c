package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// TestJudgeDovecotCountsPastSyncedMailboxes: Dovecot gives each mailbox it
// makes the next value of the root's UIDVALIDITY counter. A mailbox twinbox
// makes on B carries A's value, which B's counter never handed out: unless
// the sync moves B's counter past it, B's Dovecot later gives a new folder
// (perhaps one made again under a deleted folder's name) a value a mailbox
// already had, and a client's cached UIDs of that one name other mail
// (contract §3.1). Real Dovecot, both versions: the folders it makes on B
// after the syncs get values above every value either replica used.
func TestJudgeDovecotCountsPastSyncedMailboxes(t *testing.T) {
	dovecot.ForEach(t, testJudgeDovecotCountsPastSyncedMailboxes)
}

var uidvalidityRE = regexp.MustCompile(`uidvalidity=(\d+)`)

func testJudgeDovecotCountsPastSyncedMailboxes(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	doveadm := func(root string, args ...string) string {
		t.Helper()
		out, err := j.Doveadm(root, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	uidvalidity := func(root, mailbox string) uint32 {
		t.Helper()
		out := doveadm(root, "-f", "flow", "mailbox", "status", "uidvalidity", mailbox)
		m := uidvalidityRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("doveadm mailbox status %s: %q", mailbox, out)
		}
		v, err := strconv.ParseUint(m[1], 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(v)
	}
	// B's counter started long ago (written as Dovecot writes it), A's
	// now: A's values are far above anything B's Dovecot would hand out.
	if err := os.MkdirAll(b, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ name, data string }{{"dovecot-uidvalidity", "000003e8"}, {"dovecot-uidvalidity.000003e8", ""}} {
		if err := os.WriteFile(filepath.Join(b, f.name), []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testmail.Deliver(t, b, "INBOX", "on B")
	testmail.Deliver(t, a, "INBOX", "on A")
	var top uint32
	for _, n := range []string{"F1", "F2", "S2"} {
		doveadm(a, "mailbox", "create", n)
		top = max(top, uidvalidity(a, n))
	}
	testmail.Deliver(t, a, "S2", "in the first S2")
	syncOK(t, a, b)
	settled(t, j, a, b)
	s2 := uidvalidity(b, "S2")

	doveadm(b, "mailbox", "create", "New")
	if v := uidvalidity(b, "New"); v <= top {
		t.Fatalf("B's Dovecot gave a new folder UIDVALIDITY %d; A's folders, synced to B, had up to %d", v, top)
	}
	// S2 deleted on B and made again there: never the old value.
	doveadm(b, "mailbox", "delete", "S2")
	syncOK(t, a, b)
	doveadm(b, "mailbox", "create", "S2")
	if v := uidvalidity(b, "S2"); v <= s2 {
		t.Fatalf("S2 made again on B has UIDVALIDITY %d, the deleted S2 had %d", v, s2)
	}
	testmail.Deliver(t, b, "S2", "in the second S2")
	syncOK(t, a, b)
	settled(t, j, a, b)
}
