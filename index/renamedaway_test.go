package index_test

import (
	"testing"

	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestFolderRenamedAwayAndMadeAnewKeepsItsExpunge: on B a client expunges
// m1 from S1/Kid, delivers m2 there, renames S1 (with S1/Kid) to S3, and a
// new S1/Kid appears without a uidlist yet (a folder being made). The scan
// must not take the new directory for the renamed mailbox (the index knew
// that mailbox at S1/Kid): that took its GUID away from S3/Kid and treated
// m1 as lost with the directory, so that A's copy came back (an expunged
// message reappearing, as the IMAP stress saw: one message at different
// UIDs on A and B).
func TestFolderRenamedAwayAndMadeAnewKeepsItsExpunge(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, b, "S1", "in S1")
	m1 := testmail.Deliver(t, b, "S1/Kid", "m1")
	settle(t, a, b)
	kid := testmail.Uidlist(t, b, "S1/Kid").GUID

	testmail.Expunge(t, b, "S1/Kid", m1)
	m2 := testmail.Deliver(t, b, "S1/Kid", "m2")
	testmail.Rename(t, b, "S1", "S3")
	testmail.Rename(t, b, "S1/Kid", "S3/Kid")
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, b, "S1/Kid")); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if s := testmail.Sync(t, a, b, session.Options{}); !s.Changed {
			break
		}
		if i == 4 {
			t.Fatal("no convergence")
		}
	}
	testmail.Converged(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "S1/Kid", "S3", "S3/Kid"}, a, b)
	for _, r := range []string{a, b} {
		if got := testmail.Uidlist(t, r, "S3/Kid").GUID; got != kid {
			t.Errorf("%s: S3/Kid is mailbox %x; want the renamed S1/Kid %x", r, got, kid)
		}
		for _, mb := range testmail.Mailboxes(t, r) {
			if p := testmail.Find(t, r, mb, m1); p != "" {
				t.Errorf("%s: m1, expunged on B before the rename, is back in %s (%s)", r, mb, p)
			}
		}
		if p := testmail.Find(t, r, "S3/Kid", m2); p == "" {
			t.Errorf("%s: m2 missing from S3/Kid", r)
		}
		if n := len(testmail.Files(t, r, "S1/Kid")); n != 0 {
			t.Errorf("%s: the new S1/Kid holds %d messages; want 0", r, n)
		}
	}
}
