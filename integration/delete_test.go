package integration

import (
	"os"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
)

// TestCLIDelete: `twinbox delete` is a delete with intent (contract §5):
// the mailbox goes here at once, the next sync deletes it on the peer,
// mail that arrived on the peer after the delete survives and comes back,
// and Dovecot, reading both replicas, agrees.
func TestCLIDelete(t *testing.T) {
	j := dovecot.NewJudge(t)
	a, b := pair(t)
	testmail.Deliver(t, a, "Proj", "old 1")
	testmail.Deliver(t, a, "Proj", "old 2")
	testmail.Deliver(t, a, "Done", "finished")
	testmail.Deliver(t, a, "Done/Kid", "a child folder stays")
	syncOK(t, a, b)

	// A dry run names what it would delete and changes nothing.
	before := listing(t, a, notIndex)
	r := runWant(t, 0, "delete", "--dry-run", a, "Proj")
	if !strings.Contains(r.stdout, `would delete "Proj" (2 messages)`) {
		t.Errorf("dry run output:\n%s", r)
	}
	if after := listing(t, a, notIndex); after != before {
		t.Fatalf("delete --dry-run changed files:\n%s", diffLines(before, after))
	}

	// Refusals name the replica and the mailbox; the good name still goes.
	r = runWant(t, 1, "delete", a, "INBOX", "Nope", "Done")
	for _, want := range []string{a + ` mailbox "INBOX": INBOX cannot be deleted`, a + ` mailbox "Nope": no such mailbox`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r)
		}
	}
	if !strings.Contains(r.stdout, `deleted "Done" (1 messages)`) {
		t.Errorf("Done not reported deleted:\n%s", r)
	}

	runWant(t, 0, "delete", a, "Proj")
	for _, n := range []string{"Proj", "Done"} {
		if _, err := os.Stat(testmail.Dir(t, a, n)); !os.IsNotExist(err) {
			t.Errorf("%s still on disk after delete: %v", n, err)
		}
	}
	recs, err := maildir.ReadMailboxLog(a)
	if err != nil {
		t.Fatal(err)
	}
	dels := 0
	for _, lr := range recs {
		if lr.Type == maildir.LogDeleteMailbox {
			dels++
		}
	}
	if dels != 2 {
		t.Errorf("dovecot.mailbox.log has %d delete-mailbox records, want 2: %v", dels, recs)
	}

	late := testmail.Deliver(t, b, "Proj", "arrived on B after the delete")
	syncOK(t, a, b)
	va, _ := settled(t, j, a, b)
	if va.Mailbox("Done") != nil && va.Mailbox("Done").Count != 0 {
		t.Errorf("Done was deleted but Dovecot still sees its mail")
	}
	if c := mailbox(t, va, "Done/Kid").Count; c != 1 {
		t.Errorf("Done/Kid holds %d messages, want its 1", c)
	}
	p := mailbox(t, va, "Proj")
	if p.Count != 1 || p.Messages[0].GUID != late {
		t.Errorf("Proj holds %d messages; want only the late one %s", p.Count, late)
	}
	runWant(t, 0, "check", a, b)
}
