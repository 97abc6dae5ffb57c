package index_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// TestSubscriptionsLockOfKilledSync: a sync killed while it held B's
// subscriptions.lock leaves it behind (twinbox's format, its process
// gone). The next sync removes it as it starts, instead of waiting until
// it is stale (30 s, longer than the lock timeout: the sync then gave up
// on the subscriptions, and Dovecot's SUBSCRIBE, UNSUBSCRIBE and DELETE
// waited as long; the IMAP stress saw 30 s stalls after a SIGKILL), and
// replicates A's subscription.
func TestSubscriptionsLockOfKilledSync(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Box", "m")
	settle(t, a, b)
	if err := testmail.Loc(a).WriteSubscriptions([]string{"INBOX", "Box"}); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(b, maildir.SubscriptionsName+".lock")
	if err := os.WriteFile(lock, []byte("twinbox 999999999 0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := testmail.TrySync(a, b, session.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(lock); err == nil {
		t.Error("the killed sync's lock is still there")
	}
	subs, _, err := testmail.Loc(b).ReadSubscriptions()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(subs, "Box") {
		t.Errorf("B's subscriptions %v lack Box (sync: changed %v, skipped %v)", subs, s.Changed, s.ResultB.Skipped)
	}
}
