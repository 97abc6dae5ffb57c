package imap

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// TestVeryDirtySyncsFlagChangeHook: with maildir_very_dirty_syncs = yes,
// Dovecot does not rescan cur/ for flag changes it did not make, so a flag
// that twinbox brought to B may stay invisible over IMAP on B. The
// --flag-change-command hook (here `doveadm force-resync`) makes B show it
// at once.
func TestVeryDirtySyncsFlagChangeHook(t *testing.T) {
	dovecot.ForEach(t, testVeryDirtySyncsFlagChangeHook)
}

func testVeryDirtySyncsFlagChangeHook(t *testing.T, d *dovecot.Install) {
	p := newPair(t, dovecot.ServerOptions{Dovecot: d, VeryDirtySyncs: true})
	ca := dial(t, p.a)
	h1 := appendMsg(t, ca, "INBOX", body("dirty one"))
	h2 := appendMsg(t, ca, "INBOX", body("dirty two"))
	if err := ca.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	h3 := appendMsg(t, ca, "Work", body("dirty three"))
	p.settle(t)
	p.requireSame(t) // B's Dovecot has now indexed everything, on disk

	flagsOn := func(s *side, mailbox, h string) []string {
		t.Helper()
		v := readView(t, s)
		return v.Boxes[mailbox].Msgs[uidOf(t, v, mailbox, h)].Flags
	}
	store := func(mailbox, h string, f imap.Flag) {
		t.Helper()
		v := readView(t, p.a)
		selectBox(t, ca, mailbox)
		if _, err := ca.Store(uidSet(uidOf(t, v, mailbox, h)), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{f}}, nil).Collect(); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Without the hook. Dovecot notices a change of cur/'s mtime, but
	// with very dirty syncs it records cur/'s new mtime after its own flag
	// changes without rescanning: a rename by twinbox that falls between
	// its check and its write is never seen. A client on B changes flags
	// in a loop while the sync brings a flag change to B; try a few rounds
	// until B shows a stale flag (not guaranteed: it is a race).
	cb := dial(t, p.b)
	selectBox(t, cb, "INBOX")
	busy := uidOf(t, readView(t, p.b), "INBOX", h2)
	stale := false
	rounds := 0
	for rounds < 8 && !stale {
		rounds++
		op := imap.StoreFlagsAdd
		if rounds%2 == 0 {
			op = imap.StoreFlagsDel
		}
		stop, done := make(chan struct{}), make(chan error, 1)
		go func() {
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				o := imap.StoreFlagsAdd
				if i%2 == 1 {
					o = imap.StoreFlagsDel
				}
				if _, err := cb.Store(uidSet(busy), &imap.StoreFlags{Op: o, Silent: true, Flags: []imap.Flag{"$Busy"}}, nil).Collect(); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		v := readView(t, p.a)
		selectBox(t, ca, "INBOX")
		if _, err := ca.Store(uidSet(uidOf(t, v, "INBOX", h1)), &imap.StoreFlags{Op: op, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect(); err != nil {
			t.Fatal(err)
		}
		r := p.sync(t)
		close(stop)
		if err := <-done; err != nil {
			t.Fatalf("client on B: %v", err)
		}
		if r.code != 0 && r.code != 2 {
			t.Fatalf("sync:\n%s", r)
		}
		p.settle(t)
		wantFlag := op == imap.StoreFlagsAdd
		if got := flagsOn(p.b, "INBOX", h1); slices.Contains(got, `\Flagged`) != wantFlag {
			stale = true
			t.Logf("round %d: without the hook Dovecot on B shows the stale flags %v (\\Flagged set on disk: %v)", rounds, got, wantFlag)
		}
	}
	if !stale {
		t.Logf("without the hook Dovecot on B noticed every flag change in %d rounds (the race was not hit)", rounds)
	}
	_ = cb.Logout().Wait()

	// 2. With the hook: it runs for B (the side whose flags changed), with
	// the root, the (empty) user and the mailboxes in its environment.
	hookLog := filepath.Join(t.TempDir(), "hook.log")
	hook := fmt.Sprintf(`printf 'root=%%s user=%%s boxes=%%s\n' "$TWINBOX_ROOT" "$TWINBOX_USER" "$(printf '%%s' "$TWINBOX_MAILBOXES" | tr '\n' ,)" >> %s
case "$TWINBOX_ROOT" in
%s) %s force-resync -u %s '*' ;;
%s) %s force-resync -u %s '*' ;;
*) echo "unknown root $TWINBOX_ROOT" >&2; exit 1 ;;
esac`, hookLog, p.a.root(), p.a.srv.DoveadmCommand(), p.a.srv.User, p.b.root(), p.b.srv.DoveadmCommand(), p.b.srv.User)
	store("INBOX", h2, imap.FlagAnswered)
	store("Work", h3, "$Hooked")
	r := p.sync(t, "--flag-change-command", hook)
	if r.code != 0 {
		t.Fatalf("sync with the hook:\n%s", r)
	}
	if strings.Contains(r.stderr, "flag-change command failed") {
		t.Fatalf("the hook's doveadm force-resync failed:\n%s", r)
	}
	logb, err := os.ReadFile(hookLog)
	if err != nil {
		t.Fatalf("the hook did not run: %v\n%s", err, r)
	}
	want := fmt.Sprintf("root=%s user= boxes=INBOX,Work\n", p.b.root())
	if string(logb) != want {
		t.Fatalf("hook runs:\n%s\nwant:\n%s", logb, want)
	}
	if got := flagsOn(p.b, "INBOX", h2); !slices.Contains(got, `\Answered`) {
		t.Errorf("after the hook B shows %v, want \\Answered", got)
	}
	// The hook's force-resync also repairs a view left stale above.
	p.requireSame(t)

	// 3. A failing hook is a warning naming the root; the sync's result
	// stays 0.
	store("INBOX", h2, imap.FlagSeen)
	r = p.sync(t, "--flag-change-command", "echo hook-says-no >&2; exit 3")
	if r.code != 0 {
		t.Fatalf("a failing hook changed the sync's exit code:\n%s", r)
	}
	if !strings.Contains(r.stderr, "flag-change command failed") || !strings.Contains(r.stderr, p.b.root()) || !strings.Contains(r.stderr, "hook-says-no") {
		t.Errorf("no warning naming the root and the hook's output:\n%s", r)
	}
	// 4. No flag change, no hook run.
	r = p.sync(t, "--flag-change-command", "echo ran >> "+hookLog)
	if r.code != 0 {
		t.Fatalf("idle sync:\n%s", r)
	}
	if b, _ := os.ReadFile(hookLog); string(b) != want {
		t.Errorf("the hook ran for a sync without flag changes:\n%s", b)
	}
	p.checkLogs(t)
}
