package index_test

import (
	"context"
	"os"
	"os/exec"
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
// the other's UIDVALIDITY, its message at a UID of the new space); and a
// uidlist lost on A, restored by A's scan from the index under a new value
// (establishUidlist), which B takes in place; and a folder copied with
// cp -a on A, one copy of which the scan gives a new identity in place.
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
		act   func(t *testing.T, a, b string) // then, after cur/'s mtime is set
	}{
		{name: "rm-rf-empty", setup: func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			untilQuiet(t, a, b)
			if err := os.RemoveAll(testmail.Dir(t, b, "S2")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "rm-rf-with-a-message", setup: func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			testmail.Deliver(t, a, "S2", "kept on A")
			untilQuiet(t, a, b)
			if err := os.RemoveAll(testmail.Dir(t, b, "S2")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "merged", setup: func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			testmail.Deliver(t, a, "S2", "made on A")
			testmail.MakeMailbox(t, b, "S2", 1_000_001)
			testmail.Deliver(t, b, "S2", "made on B")
			for _, r := range []string{a, b} { // each side's message gets its UID there
				testmail.Sync(t, r, filepath.Join(t.TempDir(), "scratch"), session.Options{})
			}
		}},
		{name: "uidlist-lost", setup: func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			testmail.Deliver(t, a, "S2", "kept on A")
			untilQuiet(t, a, b)
		}, act: func(t *testing.T, a, b string) {
			// The scan restores it from the index under a new value
			// (establishUidlist), the peer takes that value in place. The
			// folder has a Dovecot index (all the scan looks for).
			dovecotIndexed(t, testmail.Dir(t, a, "S2"))
			if err := os.Remove(filepath.Join(testmail.Dir(t, a, "S2"), "dovecot-uidlist")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "copied", setup: func(t *testing.T, a, b string) {
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			testmail.Deliver(t, a, "S2", "copied on A")
			untilQuiet(t, a, b)
			// cp -a of a folder (its uidlist, and its Dovecot index, too):
			// the scan gives one of the two a new identity in place.
			dovecotIndexed(t, testmail.Dir(t, a, "S2"))
			if out, err := exec.Command("cp", "-a", testmail.Dir(t, a, "S2"), testmail.Dir(t, a, "S3")).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := roots(t)
			c.setup(t, a, b)
			type key struct{ root, box string }
			before := map[key]dirState{}
			for _, r := range []string{a, b} {
				for _, n := range []string{"S2", "S3"} {
					if _, err := os.Stat(testmail.Dir(t, r, n)); err != nil {
						continue // the vanished one, or none
					}
					before[key{r, n}] = stateOf(t, r, n)
					// As a Dovecot index settled long ago recorded it.
					if err := os.Chtimes(filepath.Join(testmail.Dir(t, r, n), "cur"), long, long); err != nil {
						t.Fatal(err)
					}
				}
			}
			if c.act != nil {
				c.act(t, a, b)
			}
			untilQuiet(t, a, b)
			inPlace := 0
			for k, was := range before {
				now := stateOf(t, k.root, k.box)
				if now.ino != was.ino || now.uv == was.uv {
					continue // a new directory, or the value it kept
				}
				inPlace++
				st, err := os.Stat(filepath.Join(testmail.Dir(t, k.root, k.box), "cur"))
				if err != nil {
					t.Fatal(err)
				}
				if st.ModTime().Equal(long) {
					t.Errorf("%s: %s's uidlist went from UIDVALIDITY %d to %d in place, but cur/'s mtime stayed %s: a settled Dovecot would not read it", k.root, k.box, was.uv, now.uv, long)
				}
			}
			if inPlace == 0 {
				t.Fatalf("no side took a new UIDVALIDITY in place: before %v", before)
			}
		})
	}
}

// dovecotIndexed gives dir a (dummy) dovecot.index.log, as a Dovecot that
// opened the folder leaves: the scan nudges Dovecot only in such folders.
func dovecotIndexed(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "dovecot.index.log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// With Dovecot's indexes kept outside the Maildir (INDEX=), no folder shows
// a sign of them, and the scan cannot tell which folders Dovecot indexed:
// a uidlist it restores under a new UIDVALIDITY (establishUidlist) moves
// cur/'s mtime always. The same folder in the default location, without
// an index in it, keeps cur/'s mtime (no Dovecot read it: no listing to
// pay for).
func TestScanNudgesDovecotWithIndexElsewhere(t *testing.T) {
	long := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		index string
		moved bool
	}{{"/var/idx/%u", true}, {"MEMORY", true}, {"", false}} {
		t.Run("INDEX="+c.index, func(t *testing.T) {
			a, b := t.TempDir(), t.TempDir()
			loc := testmail.Loc(a)
			loc.Index = c.index
			run := func() {
				t.Helper()
				if _, err := testmail.TrySyncLocs(context.Background(), loc, testmail.Loc(b), session.Options{}); err != nil {
					t.Fatal(err)
				}
			}
			testmail.MakeMailbox(t, a, "S2", 1_000_000)
			testmail.Deliver(t, a, "S2", "kept on A")
			run()
			run()
			dir := testmail.Dir(t, a, "S2")
			if err := os.Remove(filepath.Join(dir, "dovecot-uidlist")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(filepath.Join(dir, "cur"), long, long); err != nil {
				t.Fatal(err)
			}
			run()
			if uv := testmail.Uidlist(t, a, "S2").UIDValidity; uv == 1_000_000 {
				t.Fatalf("the restored uidlist kept UIDVALIDITY %d (the test needs a new one)", uv)
			}
			st, err := os.Stat(filepath.Join(dir, "cur"))
			if err != nil {
				t.Fatal(err)
			}
			if moved := !st.ModTime().Equal(long); moved != c.moved {
				t.Errorf("cur/'s mtime moved: %v, want %v", moved, c.moved)
			}
		})
	}
}

// A folder made on both sides under one UIDVALIDITY (Dovecot takes the
// first from the clock: two hosts can give the same value in the same
// second) merges with no UIDVALIDITY change: the loser's uidlist is
// rewritten under the winner's GUID and its message moves to a UID above
// the winner's, under its old file name (a rewrite renames none). A Dovecot
// with a settled index of that side reads the uidlist again only when cur/
// or new/ changed: the rewrite moves cur/'s mtime (applyBox's nudge for
// files at other UIDs under the same UIDVALIDITY).
func TestSameUIDValidityMergeMovesCurMtime(t *testing.T) {
	long := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	a, b := roots(t)
	testmail.MakeMailbox(t, a, "S2", 1_000_000)
	testmail.Deliver(t, a, "S2", "made on A")
	testmail.MakeMailbox(t, b, "S2", 1_000_000)
	testmail.Deliver(t, b, "S2", "made on B")
	// Each side's message gets UID 1 there.
	for _, r := range []string{a, b} {
		testmail.Sync(t, r, filepath.Join(t.TempDir(), "scratch"), session.Options{})
	}
	uidOf := map[string]map[string]uint32{} // root -> base name -> UID
	for _, r := range []string{a, b} {
		uidOf[r] = map[string]uint32{}
		for _, rec := range testmail.Uidlist(t, r, "S2").Records {
			uidOf[r][rec.Base()] = rec.UID
		}
		if err := os.Chtimes(filepath.Join(testmail.Dir(t, r, "S2"), "cur"), long, long); err != nil {
			t.Fatal(err)
		}
	}
	untilQuiet(t, a, b)
	moved := 0
	for _, r := range []string{a, b} {
		ul := testmail.Uidlist(t, r, "S2")
		if ul.UIDValidity != 1_000_000 {
			t.Fatalf("%s: UIDVALIDITY %d after the merge (the test needs it kept)", r, ul.UIDValidity)
		}
		for _, rec := range ul.Records {
			was, ok := uidOf[r][rec.Base()]
			if !ok || was == rec.UID {
				continue
			}
			moved++
			st, err := os.Stat(filepath.Join(testmail.Dir(t, r, "S2"), "cur"))
			if err != nil {
				t.Fatal(err)
			}
			if st.ModTime().Equal(long) {
				t.Errorf("%s: %s went from UID %d to %d under UIDVALIDITY %d with cur/'s mtime unmoved: a settled Dovecot would not read it", r, rec.Base(), was, rec.UID, ul.UIDValidity)
			}
		}
	}
	if moved == 0 {
		t.Fatal("no message changed UID in place (the test needs one)")
	}
}
