package index_test

import (
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// TestChangesInTheTickOfAStampAreSeen: on a file system whose clock moves
// in steps (Linux before 6.13 stamps files with the time of the last timer
// tick; ext3 and many NFS servers keep whole seconds), a change right after
// a scan's stamp can leave every mtime as the stamp has it. Here the file
// clock never moves at all (the extreme case): an expunge, a flag change
// and a delivery, each after a sync that stamped the mailbox, must still
// replicate. Without racy stamps (index Stamp.settled) the scan trusted
// the unchanged mtimes and saw none of them.
func TestChangesInTheTickOfAStampAreSeen(t *testing.T) {
	defer index.SetTestHookFrozenFileClock(time.Now().UnixNano())()
	a, b := testmail.Roots(t)
	m1 := testmail.Deliver(t, a, "Work", "one")
	m2 := testmail.Deliver(t, a, "Work", "two")
	testmail.Settle(t, a, b)

	testmail.Expunge(t, a, "Work", m1)
	testmail.Settle(t, a, b)
	if testmail.Find(t, b, "Work", m1) != "" {
		t.Fatalf("B still has %s, expunged on A after the last sync's stamp", m1)
	}

	testmail.SetFlags(t, b, "Work", m2, "F")
	testmail.Settle(t, a, b)
	if f := testmail.Flags(t, a, "Work", m2); f != "F" {
		t.Fatalf("A: %s has flags %q, want F (set on B after the last sync's stamp)", m2, f)
	}

	m3 := testmail.Deliver(t, b, "Work", "three")
	testmail.Settle(t, a, b)
	if testmail.Find(t, a, "Work", m3) == "" {
		t.Fatalf("A never got %s, delivered on B after the last sync's stamp", m3)
	}
	testmail.Converged(t, a, b)
}
