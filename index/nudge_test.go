package index_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// A mailbox whose uidlist an apply rewrites in place under a new
// UIDVALIDITY has its cur/ mtime moved (maildir.NudgeDovecot): Dovecot reads
// the uidlist again only when new/'s or cur/'s mtime differs from what its
// index recorded, and a rewrite that renames no file changes neither
// (integration/imap TestNewUIDValidityInPlaceSettledIndex shows the stale
// IMAP view without it). The scenarios: the folder vanished (rm -rf) on B and is
// restored there, A keeps its directory (empty, and with a message); and a
// folder made on both sides under different GUIDs, merged (one side takes
// the other's UIDVALIDITY, its message at a UID of the new space).
func TestNewUIDValidityInPlaceMovesCurMtime(t *testing.T) {
	long := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	type dirState struct {
		ino uint64
		uv  uint32
	}
	stateOf := func(t *testing.T, root, name string) dirState {
		t.Helper()
		st, err := os.Stat(testmail.Dir(t, root, name))
		if err != nil {
			t.Fatal(err)
		}
		return dirState{ino: st.Sys().(*syscall.Stat_t).Ino, uv: testmail.Uidlist(t, root, name).UIDValidity}
	}
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, a, b string) // leaves S2 to be revalidated by the next syncs
	}{
		{"rm-rf-empty", func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			untilQuiet(t, a, b)
			if err := os.RemoveAll(testmail.Dir(t, b, "S2")); err != nil {
				t.Fatal(err)
			}
		}},
		{"rm-rf-with-a-message", func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			testmail.Deliver(t, a, "S2", "kept on A")
			untilQuiet(t, a, b)
			if err := os.RemoveAll(testmail.Dir(t, b, "S2")); err != nil {
				t.Fatal(err)
			}
		}},
		{"merged", func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			testmail.Deliver(t, a, "S2", "made on A")
			testmail.MakeMailbox(t, b, "S2", 1_000_001)
			testmail.Deliver(t, b, "S2", "made on B")
			for _, r := range []string{a, b} { // each side's message gets its UID there
				testmail.Sync(t, r, filepath.Join(t.TempDir(), "scratch"), session.Options{})
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := roots(t)
			c.setup(t, a, b)
			before := map[string]dirState{}
			for _, r := range []string{a, b} {
				if _, err := os.Stat(testmail.Dir(t, r, "S2")); err != nil {
					continue // the vanished one
				}
				before[r] = stateOf(t, r, "S2")
				// As a Dovecot index settled long ago recorded it.
				if err := os.Chtimes(filepath.Join(testmail.Dir(t, r, "S2"), "cur"), long, long); err != nil {
					t.Fatal(err)
				}
			}
			untilQuiet(t, a, b)
			inPlace := 0
			for r, was := range before {
				now := stateOf(t, r, "S2")
				if now.ino != was.ino || now.uv == was.uv {
					continue // a new directory, or the value it kept
				}
				inPlace++
				st, err := os.Stat(filepath.Join(testmail.Dir(t, r, "S2"), "cur"))
				if err != nil {
					t.Fatal(err)
				}
				if st.ModTime().Equal(long) {
					t.Errorf("%s: S2's uidlist went from UIDVALIDITY %d to %d in place, but cur/'s mtime stayed %s: a settled Dovecot would not read it", r, was.uv, now.uv, long)
				}
			}
			if inPlace == 0 {
				t.Fatalf("no side took a new UIDVALIDITY in place: before %v", before)
			}
		})
	}
}
