package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// CLI behaviour: exit codes and output of the commands.

func TestCLICheck(t *testing.T) {
	a, b := pair(t)
	testmail.Deliver(t, a, "INBOX", "1")
	testmail.Deliver(t, a, "Work", "2")
	syncOK(t, a, b)

	r := runWant(t, 0, "check", a, b)
	if r.stdout != "identical\n" {
		t.Errorf("check of identical replicas printed %q, want \"identical\\n\"", r.stdout)
	}
	var js struct {
		Identical   *bool    `json:"identical"`
		Differences []string `json:"differences"`
	}
	r = runWant(t, 0, "check", "--json", a, b)
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || js.Identical == nil || !*js.Identical || len(js.Differences) != 0 {
		t.Errorf("check --json of identical replicas: %v\n%s", err, r)
	}

	// A message only on A, and a flag changed on B.
	testmail.Deliver(t, a, "INBOX", "3")
	m := testmail.Files(t, b, "Work")[0]
	testmail.SetFlags(t, b, "Work", m, "S")
	r = runWant(t, 1, "check", a, b)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^\d+ differences$`).MatchString(last) || !strings.Contains(r.stdout, `"INBOX"`) || !strings.Contains(r.stdout, `"Work"`) {
		t.Errorf("check of differing replicas should name INBOX and Work and end with \"N differences\":\n%s", r)
	}
	if n := fmt.Sprintf("%d differences", len(lines)-1); last != n {
		t.Errorf("last line %q, but %d lines of differences", last, len(lines)-1)
	}
	js.Identical, js.Differences = nil, nil
	r = runWant(t, 1, "check", "--json", a, b)
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || js.Identical == nil || *js.Identical || len(js.Differences) != len(lines)-1 {
		t.Errorf("check --json of differing replicas: %v\n%s", err, r)
	}
	// check changed nothing that a sync would not do: syncing converges.
	syncOK(t, a, b)
	runWant(t, 0, "check", a, b)
}

func TestCLISyncJSON(t *testing.T) {
	a, b := pair(t)
	for i := 0; i < 3; i++ {
		testmail.Deliver(t, a, "INBOX", fmt.Sprint("a", i))
	}
	for i := 0; i < 2; i++ {
		testmail.Deliver(t, b, "Work", fmt.Sprint("b", i))
	}
	r := runWant(t, 0, "sync", "--json", a, b)
	s := parseSummary(t, r)
	if s.Mode != "sync" || s.AppliedA == nil || s.AppliedB == nil {
		t.Fatalf("summary lacks mode or applied_a/applied_b:\n%s", r)
	}
	if s.AppliedB.Added != 3 || s.AppliedB.Fetched != 3 || s.AppliedA.Added != 2 || s.AppliedA.Fetched != 2 {
		t.Errorf("applied_a added %d fetched %d, applied_b added %d fetched %d; want 2 2 3 3:\n%s",
			s.AppliedA.Added, s.AppliedA.Fetched, s.AppliedB.Added, s.AppliedB.Fetched, r)
	}
	if s.AppliedA.Bytes <= 0 || s.AppliedB.Bytes <= 0 {
		t.Errorf("bytes not counted:\n%s", r)
	}
	if *s.RoundTrips <= 0 || *s.ExitCode != 0 || s.Changed || len(s.Held) != 0 {
		t.Errorf("round_trips %d exit_code %d changed %v held %v:\n%s", *s.RoundTrips, *s.ExitCode, s.Changed, s.Held, r)
	}
	if s.A.Root != a || s.B.Root != b || s.A.ReplicaID == "" || s.A.ReplicaID == s.B.ReplicaID {
		t.Errorf("replica info a=%+v b=%+v", s.A, s.B)
	}
	if r.stderr != "" {
		t.Errorf("sync --json wrote to stderr: %q", r.stderr)
	}
	// The same through a serve child: the same counts of nothing to do.
	r = runWant(t, 0, "sync", "--json", a, "exec:"+shellQuote(bin)+" serve --root "+shellQuote(b))
	s = parseSummary(t, r)
	if s.AppliedA.work()+s.AppliedB.work() != 0 || *s.RoundTrips <= 0 || s.Full != 0 {
		t.Errorf("second sync (exec) did work or compared in full:\n%s", r)
	}
	// The human summary.
	testmail.Deliver(t, b, "INBOX", "one more")
	r = runWant(t, 0, "sync", a, b)
	if !strings.HasPrefix(r.stdout, "sync of "+a+" and "+b+": ") || !strings.Contains(r.stdout, "A: +1 messages (1 fetched") {
		t.Errorf("human summary:\n%s", r)
	}
}

func TestCLIDryRun(t *testing.T) {
	a, b := pair(t)
	m := testmail.Deliver(t, a, "INBOX", "base")
	syncOK(t, a, b)
	// Changes of every kind, on both sides.
	testmail.Deliver(t, a, "INBOX", "new on A")
	testmail.Deliver(t, b, "Work", "new folder on B")
	testmail.SetFlags(t, b, "INBOX", m, "FS")
	testmail.Deliver(t, a, "Old", "to be renamed")
	syncOK(t, a, b)
	testmail.Rename(t, a, "Old", "New")
	testmail.DeleteWithIntent(t, b, "Work")
	testmail.Deliver(t, b, "INBOX", "new on B")

	before := listing(t, a, notIndex) + "\n--\n" + listing(t, b, notIndex)
	r := runWant(t, 0, "sync", "--dry-run", a, b)
	if !strings.HasPrefix(r.stdout, "dry run: sync plan for ") || strings.Contains(r.stdout, "nothing to do") {
		t.Errorf("dry run output:\n%s", r)
	}
	rj := runWant(t, 0, "sync", "--dry-run", "--json", a, b)
	if s := parseSummary(t, rj); len(s.Plan) == 0 {
		t.Errorf("dry run --json has no plan:\n%s", rj)
	}
	after := listing(t, a, notIndex) + "\n--\n" + listing(t, b, notIndex)
	// No message file, folder or control file other than a uidlist may change.
	uidlists := regexp.MustCompile(`(?m)^(.*/)?dovecot-uidlist .*$`)
	if x, y := uidlists.ReplaceAllString(before, "$1dovecot-uidlist"), uidlists.ReplaceAllString(after, "$1dovecot-uidlist"); x != y {
		t.Fatalf("--dry-run changed files:\n%s", diffLines(x, y))
	}
	if after != before {
		// The scan gave the new message on B a UID and rewrote the uidlist.
		t.Errorf("BUG: --dry-run is documented to change nothing, but it rewrote dovecot-uidlist files:\n%s", diffLines(before, after))
	}
	// The real sync does what the plan said, then a dry run has nothing to do.
	syncOK(t, a, b)
	runWant(t, 0, "check", a, b)
	r = runWant(t, 0, "sync", "--dry-run", a, b)
	if !strings.Contains(r.stdout, "nothing to do") {
		t.Errorf("dry run after convergence:\n%s", r)
	}
}

func TestCLIMassExpungeHeld(t *testing.T) {
	a, b := pair(t)
	boxes := map[string]int{"Archive": 60, "Trash": 60, "Small": 40, "Big": 200}
	msgs := map[string][]string{}
	for box, n := range boxes {
		for i := 0; i < n; i++ {
			msgs[box] = append(msgs[box], testmail.Deliver(t, a, box, fmt.Sprint(box, i)))
		}
	}
	syncOK(t, a, b)
	expunge := func(box string, n int) {
		for _, m := range msgs[box][:n] {
			testmail.Expunge(t, a, box, m)
		}
	}
	expunge("Archive", 60) // all of 60: held
	expunge("Trash", 60)   // Trash is exempt
	expunge("Small", 40)   // all, but not more than 50
	expunge("Big", 60)     // more than 50, but not more than half
	r := runWant(t, 3, "sync", "--json", a, b)
	s := parseSummary(t, r)
	if len(s.Held) != 1 || s.Held[0].Count != 60 || !strings.Contains(s.Held[0].Mailbox, "Archive") {
		t.Errorf("held %+v, want 60 in Archive:\n%s", s.Held, r)
	}
	count := func(root, box string) int { return len(testmail.Files(t, root, box)) }
	if got := []int{count(b, "Archive"), count(b, "Trash"), count(b, "Small"), count(b, "Big")}; !reflect.DeepEqual(got, []int{60, 0, 0, 140}) {
		t.Errorf("B: Archive Trash Small Big hold %v messages, want 60 0 0 140", got)
	}
	// Held expunges are reported again, in the human summary too.
	r = runWant(t, 3, "sync", a, b)
	if !strings.Contains(r.stdout, "HELD: 60 expunges in") || !strings.Contains(r.stdout, "--allow-mass-expunge") {
		t.Errorf("summary of a held mass expunge:\n%s", r)
	}
	if count(b, "Archive") != 60 {
		t.Fatalf("the held expunges were replicated by the second sync")
	}
	runWant(t, 1, "check", a, b)
	// Released.
	r = runWant(t, 0, "sync", "--json", "--allow-mass-expunge", a, b)
	if s := parseSummary(t, r); len(s.Held) != 0 || s.AppliedB.Expunged != 60 {
		t.Errorf("release: held %v, B expunged %d; want none and 60:\n%s", s.Held, s.AppliedB.Expunged, r)
	}
	if count(b, "Archive") != 0 {
		t.Errorf("B still has %d messages in Archive", count(b, "Archive"))
	}
	runWant(t, 0, "check", a, b)
	requireClean(t, nil, false, a, b)
	requireIdle(t, a, b)
}

func TestCLIBadLocations(t *testing.T) {
	d := t.TempDir()
	good := filepath.Join(d, "good")
	testmail.Deliver(t, good, "INBOX", "x")
	file := filepath.Join(d, "file")
	if err := os.WriteFile(file, []byte("not a maildir"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		args    []string
		mention string // the error must mention this
	}{
		{"file as root", []string{"sync", good, file}, file},
		{"file as first root", []string{"sync", file, good}, file},
		{"file under root", []string{"sync", good, filepath.Join(file, "sub")}, file},
		{"unknown option", []string{"sync", good, "maildir:" + filepath.Join(d, "x") + ":BOGUS=1"}, "BOGUS=1"},
		{"other format", []string{"sync", good, "mbox:" + filepath.Join(d, "x")}, "mbox"},
		{"empty exec", []string{"sync", good, "exec:"}, "exec:"},
		{"failing exec", []string{"sync", good, "exec:exit 7"}, ""},
		{"backup into a file", []string{"backup", good, file}, file},
		{"check with a file", []string{"check", good, file}, file},
		{"serve a bad location", []string{"serve", "--root", "maildir:" + good + ":BOGUS=1"}, "BOGUS=1"},
		{"relative tilde", []string{"sync", good, "~/Maildir"}, "~"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, c.args...)
			if r.code != 1 {
				t.Fatalf("want exit 1:\n%s", r)
			}
			if !strings.HasPrefix(r.stderr, "twinbox: ") && !strings.Contains(r.stderr, "twinbox:") {
				t.Errorf("stderr does not say twinbox: %q", r.stderr)
			}
			if c.mention != "" && !strings.Contains(r.stderr, c.mention) {
				t.Errorf("error does not mention %q:\n%s", c.mention, r)
			}
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
				t.Errorf("crashed:\n%s", r)
			}
		})
	}
	// Nothing was created at the bad locations, and the good root is intact.
	if _, err := os.Stat(filepath.Join(d, "x")); err == nil {
		t.Errorf("a root with a bad option was created")
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != "not a maildir" {
		t.Errorf("the file given as a root changed: %q %v", data, err)
	}
	if n := len(testmail.Files(t, good, "INBOX")); n != 1 {
		t.Errorf("the good root has %d messages, want 1", n)
	}
	b := filepath.Join(d, "b")
	syncOK(t, good, b)
	requireClean(t, nil, false, good, b)
}

func TestCLIExcludeInclude(t *testing.T) {
	a, b := pair(t)
	for _, box := range []string{"INBOX", "Work", "Work/Sub", "Lists/go", "Lists/rust", "Spam"} {
		testmail.Deliver(t, a, box, box)
	}
	testmail.Deliver(t, b, "Private", "B only")
	runWant(t, 0, "sync", "--exclude", "Lists*", "--exclude", "Spam", a, b)
	if got, want := testmail.Mailboxes(t, b), []string{"INBOX", "Private", "Work", "Work/Sub"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after --exclude: B has %v, want %v", got, want)
	}
	// Excluded on both sides: B's Private did not go to A either.
	if got, want := testmail.Mailboxes(t, a), []string{"INBOX", "Lists/go", "Lists/rust", "Private", "Spam", "Work", "Work/Sub"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after --exclude: A has %v, want %v", got, want)
	}
	runWant(t, 1, "check", a, b)
	runWant(t, 0, "check", "--exclude", "Lists*", "--exclude", "Spam", a, b)

	// % does not cross "/": Lists/% names both lists; only Lists/go by name.
	runWant(t, 0, "sync", "--include", "Lists/g%", a, b)
	if got := testmail.Mailboxes(t, b); !reflect.DeepEqual(got, []string{"INBOX", "Lists/go", "Private", "Work", "Work/Sub"}) {
		t.Errorf("after --include Lists/g%%: B has %v", got)
	}
	// Changes in an excluded mailbox stay where they are.
	m := testmail.Files(t, a, "Work")[0]
	testmail.SetFlags(t, a, "Work", m, "S")
	runWant(t, 0, "sync", "--exclude", "Work", a, b)
	if f := testmail.Flags(t, b, "Work", m); f != "" {
		t.Errorf("flag change in excluded Work replicated: %q", f)
	}
	runWant(t, 0, "sync", a, b)
	if f := testmail.Flags(t, b, "Work", m); f != "S" {
		t.Errorf("flag change in Work not replicated by the unfiltered sync: %q", f)
	}
	runWant(t, 0, "check", a, b)
	requireClean(t, nil, false, a, b)
}

func TestCLIDemo(t *testing.T) {
	tmp := t.TempDir()
	r := startEnv(t, []string{"TMPDIR=" + tmp}, "demo").wait(cmdTimeout)
	if r.code != 0 || !strings.Contains(r.stdout, "identical") {
		t.Fatalf("demo:\n%s", r)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("demo left %d entries in its temporary directory", len(ents))
	}
	// With --dir it keeps its replicas, which are then in sync.
	dir := filepath.Join(t.TempDir(), "demo")
	runWant(t, 0, "demo", "--dir", dir)
	a, b := filepath.Join(dir, "mx1", "bob", "Maildir"), filepath.Join(dir, "mx2", "bob", "Maildir")
	runWant(t, 0, "check", a, b)
	requireClean(t, nil, false, a, b)
	runWant(t, 1, "demo", "--dir", dir) // not empty any more
}

func TestCLISameReplicaRefused(t *testing.T) {
	a, b := pair(t)
	testmail.Deliver(t, a, "INBOX", "x")
	syncOK(t, a, b)
	cp := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(cp, os.DirFS(a)); err != nil {
		t.Fatal(err)
	}
	r := runWant(t, 1, "sync", a, cp)
	if !strings.Contains(r.stderr, "same replica ID") {
		t.Errorf("sync with a copy of itself:\n%s", r)
	}
}

func TestCLILockedReplica(t *testing.T) {
	a, b := pair(t)
	testmail.Deliver(t, a, "INBOX", "x")
	syncOK(t, a, b)
	// Another twinbox holds B's lock (the index file's flock).
	f, err := os.OpenFile(filepath.Join(b, "twinbox.db"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"sync", "--lock-timeout", "500ms", a, b},
		{"sync", "--lock-timeout", "500ms", b, a},
		{"sync", "--lock-timeout", "500ms", a, "exec:" + shellQuote(bin) + " serve --lock-timeout 500ms --root " + shellQuote(b)},
	} {
		r := run(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, b) || !strings.Contains(r.stderr, "lock") {
			t.Errorf("sync of a locked replica must fail naming it and the lock:\n%s", r)
		}
		if r.dur > 20*time.Second {
			t.Errorf("waited %v for a 500ms lock timeout", r.dur)
		}
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	runWant(t, 0, "sync", a, b)
}

func TestCLIHelpAndVersion(t *testing.T) {
	r := runWant(t, 0, "--help")
	for _, want := range []string{"sync", "backup", "check", "serve", "demo", "Exit codes", "mass expunge"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help does not mention %q:\n%s", want, r.stdout)
		}
	}
	r = runWant(t, 0, "version")
	if !strings.HasPrefix(r.stdout, "twinbox ") {
		t.Errorf("version: %q", r.stdout)
	}
	r = run(t, "sync", "only-one-argument")
	if r.code != 1 {
		t.Errorf("usage error: want exit 1:\n%s", r)
	}
}

// TestCLIMassExpungeSpecialUse: a mailbox that Dovecot's configuration
// marks \Trash or \Junk (special_use) is exempt from the mass-expunge
// guard whatever its name; dovecot_config = none turns that off.
func TestCLIMassExpungeSpecialUse(t *testing.T) {
	if _, err := exec.LookPath("doveconf"); err != nil {
		if os.Getenv("TWINBOX_REQUIRE_DOVECOT") == "1" {
			t.Fatal("doveconf not installed (TWINBOX_REQUIRE_DOVECOT=1)")
		}
		t.Skip("doveconf not installed")
	}
	conf := filepath.Join(t.TempDir(), "dovecot.conf")
	if err := os.WriteFile(conf, []byte("mail_location = maildir:~/Maildir\nnamespace inbox {\n  inbox = yes\n  mailbox Papierkorb {\n    special_use = \\Trash\n  }\n  mailbox Reklame {\n    special_use = \\Junk \\Important\n  }\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	boxes := []string{"Archiv", "Papierkorb", "Reklame"}
	for _, c := range []struct {
		name, setting string
		held          []string
	}{
		{"doveconf", conf, []string{"Archiv"}},
		{"none", "none", boxes},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := pair(t)
			msgs := map[string][]string{}
			for _, box := range boxes {
				for i := 0; i < 60; i++ {
					msgs[box] = append(msgs[box], testmail.Deliver(t, a, box, fmt.Sprint(box, i)))
				}
			}
			syncOK(t, a, b)
			for box, ms := range msgs {
				for _, m := range ms {
					testmail.Expunge(t, a, box, m)
				}
			}
			r := startEnv(t, []string{"TWINBOX_DOVECOT_CONFIG=" + c.setting}, "sync", "--json", a, b).wait(cmdTimeout)
			if r.code != 3 {
				t.Fatalf("want exit 3 (held), got:\n%s", r)
			}
			var held []string
			for _, h := range parseSummary(t, r).Held {
				held = append(held, strings.TrimPrefix(h.Mailbox, a+": "))
			}
			sort.Strings(held)
			if !reflect.DeepEqual(held, c.held) {
				t.Errorf("held %q, want %q:\n%s", held, c.held, r)
			}
			for _, box := range boxes {
				want := 0
				if slices.Contains(c.held, box) {
					want = 60
				}
				if got := len(testmail.Files(t, b, box)); got != want {
					t.Errorf("B %s holds %d messages, want %d", box, got, want)
				}
			}
		})
	}
}
