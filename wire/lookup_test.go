package wire_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// Per-GUID lookups cross the wire both ways: a replica that never held a
// message takes it from a third replica, and gives it up at its next sync
// with the replica that expunged it, whichever side of the session the
// remote one is (when it is side A, its lookup is a second "changes").
func TestLookupOverWire(t *testing.T) {
	for _, remoteFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("remoteFirst=%v", remoteFirst), func(t *testing.T) {
			d := t.TempDir()
			a, b, c := filepath.Join(d, "a"), filepath.Join(d, "b"), filepath.Join(d, "c")
			// A is always remote to B, and B remote to C: every served
			// replica here has one ID, and saved state is kept per peer ID.
			testmail.Deliver(t, a, "INBOX", "common")
			syncOverWire(t, b, a, remoteFirst)
			syncOverWire(t, c, b, remoteFirst)
			m := testmail.Deliver(t, c, "INBOX", "on C")
			syncOverWire(t, c, a, remoteFirst) // A gets m
			testmail.Expunge(t, a, "INBOX", m)
			syncOverWire(t, b, a, remoteFirst) // B never held m
			syncOverWire(t, c, b, remoteFirst) // B gets m from C
			s := syncOverWire(t, b, a, remoteFirst)
			if s.sum.Full != 0 {
				t.Fatalf("the last sync compared %d mailboxes in full", s.sum.Full)
			}
			if slices.Contains(testmail.Files(t, b, "INBOX"), m) {
				t.Fatalf("B kept the message A expunged (%d round trips)", s.roundTrips)
			}
		})
	}
}
