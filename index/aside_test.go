package index_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// A swap of two folders' names (S1 and S2 on A) replicates to B as two
// renames whose targets are taken: B renames both aside under hidden names
// first. A sync stopped right after that (here its context is cancelled at
// the first rename to a final name; in life the peer failed or the
// connection was cut) puts them back where they were: B's user does not
// lose sight of two folders until the next sync. The next sync makes the
// swap. Without index.putBack both folders stayed hidden after the failed
// sync.
func TestStoppedRenameChainPutsFoldersBack(t *testing.T) {
	for _, layout := range []maildir.Layout{maildir.LayoutMaildirPP, maildir.LayoutFS} {
		t.Run(layoutName(layout), func(t *testing.T) {
			a, b := t.TempDir(), t.TempDir()
			loc := func(root string) maildir.Location {
				l := testmail.Loc(root)
				l.Layout = layout
				return l
			}
			for _, r := range []string{a, b} {
				if err := os.MkdirAll(filepath.Join(r, "cur"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			deliver := func(root, box, text string) {
				l := loc(root)
				dir, err := l.MailboxDir(box)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := l.MakeMailbox(dir, nil); err != nil {
					t.Fatal(err)
				}
				name := filepath.Join(dir, "new", "1700000000.M"+text+"P1.host")
				if err := os.WriteFile(name, []byte("Subject: "+text+"\r\n\r\n"+text+"\r\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			run := func(ctx context.Context) (*session.Summary, error) {
				return testmail.TrySyncLocs(ctx, loc(a), loc(b), session.Options{})
			}
			deliver(a, "S1", "one")
			deliver(a, "S2", "two")
			for i := 0; i < 2; i++ {
				if _, err := run(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			// The swap, on A.
			dir := func(root, box string) string {
				d, err := loc(root).MailboxDir(box)
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			mustRename := func(from, to string) {
				if err := os.Rename(from, to); err != nil {
					t.Fatal(err)
				}
			}
			mustRename(dir(a, "S1"), dir(a, "Swap"))
			mustRename(dir(a, "S2"), dir(a, "S1"))
			mustRename(dir(a, "Swap"), dir(a, "S2"))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hidden := 0
			restore := index.SetTestHookBeforeRename(func(dst string) {
				if strings.HasPrefix(dst, b) {
					hs, _ := loc(b).HiddenMailboxes()
					hidden = max(hidden, len(hs))
					cancel()
				}
			})
			_, err := run(ctx)
			restore()
			if err == nil {
				t.Fatal("the sync whose context was cancelled succeeded")
			}
			if hidden == 0 {
				t.Fatal("B had no folder renamed aside when the sync stopped (the test needs one)")
			}
			if hs, _ := loc(b).HiddenMailboxes(); len(hs) != 0 {
				t.Errorf("after the stopped sync B still has folders at hidden names: %v", hs)
			}
			for box, want := range map[string]string{"S1": "one", "S2": "two"} {
				got := bodies(t, dir(b, box))
				if got != want {
					t.Errorf("B's %s after the stopped sync holds %q; want %q (where it was)", box, got, want)
				}
			}
			for i := 0; ; i++ {
				s, err := run(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if !s.Changed {
					break
				}
				if i == 3 {
					t.Fatal("no convergence")
				}
			}
			for box, want := range map[string]string{"S1": "two", "S2": "one"} {
				if got := bodies(t, dir(b, box)); got != want {
					t.Errorf("B's %s after the next sync holds %q; want %q (swapped)", box, got, want)
				}
			}
		})
	}
}

func layoutName(l maildir.Layout) string {
	if l == maildir.LayoutFS {
		return "fs"
	}
	return "maildir++"
}

// bodies returns the last lines of the messages in dir's new/ and cur/,
// joined by ",".
func bodies(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			data, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			out = append(out, strings.TrimSpace(lines[len(lines)-1]))
		}
	}
	return strings.Join(out, ",")
}

// LAYOUT=fs: a twinbox killed in a chain of renames left folder P under
// its hidden name, with its child P/c inside. The next scan moves P back
// (bringBack) and finds P/c at its place in the same scan: the sync
// replicates nothing, changes nothing on the peer and converges at once.
func TestKilledChainLeavesParentAsideWithChild(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	loc := func(root string) maildir.Location {
		l := testmail.Loc(root)
		l.Layout = maildir.LayoutFS
		return l
	}
	run := func() *session.Summary {
		t.Helper()
		s, err := testmail.TrySyncLocs(context.Background(), loc(a), loc(b), session.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, r := range []string{a, b} {
		if err := os.MkdirAll(filepath.Join(r, "cur"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, box := range []string{"P", "P/c"} {
		dir, _ := loc(a).MailboxDir(box)
		if _, err := loc(a).MakeMailbox(dir, nil); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "new", "1700000000.M1P1.host"), []byte("Subject: "+box+"\r\n\r\n"+box+"\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run()
	if s := run(); s.Changed {
		t.Fatal("no convergence before the test")
	}
	p, _ := loc(a).MailboxDir("P")
	ul, _, err := maildir.ReadUidlist(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(loc(a).HiddenDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	aside := loc(a).HiddenPath(fmt.Sprintf("%x", ul.GUID))
	if err := os.Rename(p, aside); err != nil {
		t.Fatal(err)
	}
	s := run()
	if s.Changed {
		t.Errorf("the sync after the kill did not converge at once: %+v %+v", s.ResultA.Skipped, s.ResultB.Skipped)
	}
	for _, root := range []string{a, b} {
		for _, box := range []string{"P", "P/c"} {
			dir, _ := loc(root).MailboxDir(box)
			if got := bodies(t, dir); got != box {
				t.Errorf("%s's %s holds %q, want %q", root, box, got, box)
			}
		}
		if hs, _ := loc(root).HiddenMailboxes(); len(hs) != 0 {
			t.Errorf("%s: folders left at hidden names: %v", root, hs)
		}
	}
	if s := run(); s.Changed {
		t.Error("a second sync changed something")
	}
}
