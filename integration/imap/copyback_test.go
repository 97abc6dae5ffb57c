package imap

import (
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/maildir"
)

// TestCopyBackAfterSyncedExpungeGetsANewName: a message of A's INBOX, also
// copied by a client to Work, is expunged on B; the sync expunges it on A.
// A client then COPYs the Work copy back into INBOX: Dovecot names the copy
// by the message's GUID, the original's file name, unless INBOX's uidlist
// still lists that name (as Dovecot's own expunge leaves it). The sync's
// expunge must leave the record too: else the name comes back under a new
// UID, which a Dovecot process that knows it under the old one reads as
// "Duplicate file entry ... (uid 1 -> N)" (three default stress runs on
// 2.4 failed on that warning, after such round trips).
func TestCopyBackAfterSyncedExpungeGetsANewName(t *testing.T) {
	dovecot.ForEach(t, testCopyBackAfterSyncedExpungeGetsANewName)
}

func testCopyBackAfterSyncedExpungeGetsANewName(t *testing.T, d *dovecot.Install) {
	p := newPair(t, dovecot.ServerOptions{Dovecot: d})
	c := dial(t, p.a)
	if err := c.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, c, "INBOX", body("round trip"))
	appendMsg(t, c, "INBOX", body("stays"))
	p.settle(t)
	ul, _, err := maildir.ReadUidlist(p.a.root())
	if err != nil {
		t.Fatal(err)
	}
	orig := ""
	for _, r := range ul.Records {
		if r.UID == 1 {
			orig = r.Base()
		}
	}
	selectBox(t, c, "INBOX")
	if _, err := c.Copy(imap.UIDSetNum(1), "Work").Wait(); err != nil {
		t.Fatal(err)
	}
	cb := dial(t, p.b)
	selectBox(t, cb, "INBOX")
	if _, err := cb.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.UIDExpunge(imap.UIDSetNum(1)).Collect(); err != nil {
		t.Fatal(err)
	}
	p.settle(t)
	selectBox(t, c, "Work")
	if _, err := c.Copy(imap.UIDSetNum(1), "INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	after, _, err := maildir.ReadUidlist(p.a.root())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range after.Records {
		if r.Base() == orig && r.UID != 1 {
			t.Fatalf("the copy back took the expunged message's file name %s under UID %d; uidlist %+v", orig, r.UID, after.Records)
		}
	}
	p.settle(t)
	p.requireSame(t)
	// twinbox check reads the replicas through twinbox's scan (expunged
	// messages' records kept without their files, or dropped at a quarter
	// as Dovecot does): it agrees with the IMAP views above.
	if r := run(t, p.syncEnv, "check", p.a.root(), p.b.root()); r.code != 0 {
		t.Errorf("twinbox check:\n%s", r)
	}
	p.checkLogs(t)
}
