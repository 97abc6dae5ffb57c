package integration

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
)

// TestLayoutFSSync: two LAYOUT=fs replicas (folders as nested directories)
// sync, and a parent folder renamed with its child (one mv carries both)
// replicates in one sync, as Dovecot then sees on both sides.
func TestLayoutFSSync(t *testing.T) {
	j := dovecot.NewJudge(t)
	a, b := pair(t)
	la, lb := "maildir:"+a+":LAYOUT=fs", "maildir:"+b+":LAYOUT=fs"
	locA := maildir.Location{Root: a, Layout: maildir.LayoutFS}
	locB := maildir.Location{Root: b, Layout: maildir.LayoutFS}
	testmail.DeliverAt(t, locA, "INBOX", "in")
	testmail.DeliverAt(t, locA, "P", "parent 1")
	testmail.DeliverAt(t, locA, "P", "parent 2")
	testmail.DeliverAt(t, locA, "P/C", "child")
	testmail.DeliverAt(t, locB, "Other/Deep/Er", "from b")
	syncOK(t, "sync", la, lb)
	runWant(t, 0, "check", la, lb)

	// A plain mv of the parent carries the child along.
	if err := os.Rename(filepath.Join(a, "P"), filepath.Join(a, "Q")); err != nil {
		t.Fatal(err)
	}
	// And on B a child moves to the top level.
	if err := os.Rename(filepath.Join(b, "Other", "Deep", "Er"), filepath.Join(b, "Er")); err != nil {
		t.Fatal(err)
	}
	r := run(t, "sync", "-v", la, lb)
	if r.code != 0 {
		t.Errorf("the sync after the renames: want exit 0 (one sync replicates them), got:\n%s", r)
	}
	runWant(t, 0, "sync", la, lb)
	runWant(t, 0, "check", la, lb)

	judgeFS(t, j, map[string]int{"INBOX": 1, "Q": 2, "Q/C": 1, "Er": 1}, a, b)

	// A delete with intent of the parent: its own mail goes, the child
	// folder (a directory inside it) stays, on both sides.
	runWant(t, 0, "delete", la, "Q")
	if _, err := os.Stat(filepath.Join(a, "Q", "C", "cur")); err != nil {
		t.Fatalf("the child folder went with its parent: %v", err)
	}
	runWant(t, 0, "sync", la, lb)
	runWant(t, 0, "sync", la, lb)
	runWant(t, 0, "check", la, lb)
	judgeFS(t, j, map[string]int{"INBOX": 1, "Q/C": 1, "Er": 1}, a, b)
}

// judgeFS reads LAYOUT=fs roots with Dovecot and fails unless each shows
// exactly the selectable mailboxes of want, with those message counts.
func judgeFS(t *testing.T, j *dovecot.Judge, want map[string]int, roots ...string) {
	t.Helper()
	for _, root := range roots {
		v, err := j.Read(root, dovecot.LayoutFS())
		if err != nil {
			t.Fatal(err)
		}
		if p := v.Check(); len(p) > 0 {
			t.Errorf("Dovecot on %s:\n%s", root, strings.Join(p, "\n"))
		}
		got := map[string]int{}
		var names []string
		for _, mb := range v.Mailboxes {
			names = append(names, mb.Name)
			if !mb.NoSelect {
				got[mb.Name] = mb.Count
			}
		}
		sort.Strings(names)
		for n, c := range want {
			if got[n] != c {
				t.Errorf("%s: Dovecot sees %s with %d messages, want %d (mailboxes %q)", root, n, got[n], c, names)
			}
		}
		for n := range got {
			if _, ok := want[n]; !ok {
				t.Errorf("%s: Dovecot sees an unexpected mailbox %s (mailboxes %q)", root, n, names)
			}
		}
	}
}

// TestLayoutFSSwapKeepsInboxTmp: two folders that swap names (a cycle of
// renames, which the sync breaks through a hidden name in the root's tmp/,
// LAYOUT=fs's hidden directory) leave INBOX's tmp/ in place on both sides:
// the apply's removal of emptied parents stopped at the mail root only and
// took tmp/ with it (found by the property test, seed 3958361258605212030,
// an MTA's delivery into INBOX failed).
func TestLayoutFSSwapKeepsInboxTmp(t *testing.T) {
	a, b := pair(t)
	la, lb := "maildir:"+a+":LAYOUT=fs", "maildir:"+b+":LAYOUT=fs"
	locA := maildir.Location{Root: a, Layout: maildir.LayoutFS}
	testmail.DeliverAt(t, locA, "INBOX", "in")
	testmail.DeliverAt(t, locA, "X", "x")
	testmail.DeliverAt(t, locA, "Y", "y")
	syncOK(t, "sync", la, lb)
	for _, mv := range [][2]string{{"X", "T"}, {"Y", "X"}, {"T", "Y"}} {
		if err := os.Rename(filepath.Join(a, mv[0]), filepath.Join(a, mv[1])); err != nil {
			t.Fatal(err)
		}
	}
	syncOK(t, "sync", la, lb)
	runWant(t, 0, "check", la, lb)
	for _, root := range []string{a, b} {
		if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || !fi.IsDir() {
			t.Errorf("%s: INBOX's tmp/ is gone after the swap: %v", root, err)
		}
	}
}
