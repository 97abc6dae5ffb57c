package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// Crash tests (contract §6): a large sync is SIGKILLed at seeded random
// moments, in either process, and then run again until it converges. After
// that nothing delivered is lost, nothing is duplicated, no temporary file
// or lock is left, every dovecot-uidlist is valid, the replicas are
// identical, and one more sync has nothing to do.

// victim is the process a crash attempt kills.
type victim int

const (
	// victimClient: the process of `twinbox sync A B` (B's server runs in it).
	victimClient victim = iota
	// victimServe: the far side of `twinbox sync A exec:...`, a separate
	// `twinbox serve` process.
	victimServe
	// victimExecClient: the client of `twinbox sync A exec:...`; its serve
	// child must then notice and exit by itself.
	victimExecClient
)

func (v victim) String() string {
	return [...]string{"client", "serve child", "client of serve child"}[v]
}

// crashFolders are the mailboxes of the large sync.
var crashFolders = []string{"INBOX", "Archive", "Work", "Work/Projects", "Lists", "Lists/golang", "Sent", "Drafts"}

// crashTest is one crash test's replicas and bookkeeping.
type crashTest struct {
	t      *testing.T
	rng    *rand.Rand
	dir    string
	a, b   string
	c      *corpus
	ga, gb *mailGen
	// est is how long an uninterrupted sync takes (first of the starting
	// state, then as long as the last one that finished before its kill);
	// kill moments are drawn from [0, 1.2*est].
	est time.Duration
	// stats
	attempts, kills, finished, reruns, staleLocks int
	byVictim                                      map[victim]int
	codes                                         map[int]int // exit codes of killed-side clients / finished runs
	lockNoted                                     bool
	round                                         int
	deadline                                      time.Time // no new attempts after it (once 3 kills landed)
	emptyLocks                                    int
}

func newCrashTest(t *testing.T) *crashTest {
	d := t.TempDir()
	ct := &crashTest{t: t, rng: newRand(seed(t)), dir: d, a: filepath.Join(d, "a"), b: filepath.Join(d, "b"),
		c: newCorpus(), byVictim: map[victim]int{}, codes: map[int]int{}, deadline: time.Now().Add(budget())}
	ct.ga = newMailGen(ct.rng, "a", ct.c)
	ct.gb = newMailGen(ct.rng, "b", ct.c)
	return ct
}

// size is a message size of 2 to 40 KB.
func (ct *crashTest) size() int { return 2<<10 + ct.rng.IntN(38<<10) }

// randomFlags are the flags a delivered message starts with.
func (ct *crashTest) randomFlags() string {
	return [...]string{"", "", "S", "S", "RS", "FS"}[ct.rng.IntN(6)]
}

// deliverBatch delivers n messages of 2-40 KB to g's side in random folders
// (of the first folders of crashFolders), and big messages of 1 MB.
func (ct *crashTest) deliverBatch(root string, g *mailGen, n, folders, big int) {
	for i := 0; i < n; i++ {
		box := crashFolders[ct.rng.IntN(folders)]
		g.deliver(ct.t, root, box, g.message(ct.size()), ct.randomFlags())
	}
	for i := 0; i < big; i++ {
		g.deliver(ct.t, root, crashFolders[ct.rng.IntN(2)], g.message(1<<20), "S")
	}
}

// calibrate syncs a copy of the replicas once, uninterrupted, to learn how
// long the sync takes.
func (ct *crashTest) calibrate(args func(a, b, pidfile string) []string) {
	t := ct.t
	ca, cb := filepath.Join(ct.dir, "calib-a"), filepath.Join(ct.dir, "calib-b")
	for _, p := range [][2]string{{ct.a, ca}, {ct.b, cb}} {
		if _, err := os.Stat(p[0]); os.IsNotExist(err) {
			continue
		}
		if err := dovecot.CopyTree(p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	syscall.Sync() // time the sync, not the flush of what the copy wrote
	r := run(t, args(ca, cb, filepath.Join(ct.dir, "calib.pid"))...)
	if r.code != 0 {
		t.Fatalf("uninterrupted sync of a copy failed:\n%s", r)
	}
	ct.est = min(r.dur, 5*time.Second)
	t.Logf("an uninterrupted sync of %d messages takes %v", ct.c.count(), r.dur.Round(time.Millisecond))
	os.RemoveAll(ca)
	os.RemoveAll(cb)
	syscall.Sync()
}

// syncArgs is the command line of a sync of a and b, where b is reached
// through a serve child for the exec victims.
func syncArgs(v victim) func(a, b, pidfile string) []string {
	return func(a, b, pidfile string) []string {
		args := []string{"sync", "--json", "--lock-timeout", "10s", a}
		if v == victimClient {
			return append(args, b)
		}
		return append(args, fmt.Sprintf("exec:echo $$ > %s && exec %s serve --lock-timeout 10s --root %s",
			shellQuote(pidfile), shellQuote(bin), shellQuote(b)))
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// attempt starts a sync and SIGKILLs the victim at a random moment. It
// reports whether the kill hit a running sync.
func (ct *crashTest) attempt(v victim) bool {
	t := ct.t
	t.Helper()
	ct.attempts++
	delay := time.Duration(ct.rng.Float64() * 1.2 * float64(ct.est))
	pidfile := filepath.Join(ct.dir, "serve.pid")
	os.Remove(pidfile)
	p := start(t, syncArgs(v)(ct.a, ct.b, pidfile)...)
	select {
	case <-p.done:
	case <-time.After(delay):
	}
	killed := false
	switch v {
	case victimClient:
		killed = p.kill()
	case victimServe:
		pid := servePid(pidfile, p)
		if pid > 0 && alive(pid) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				killed = true
			}
		}
		// The client must notice that its peer died, and fail.
		r := p.wait(time.Minute)
		if killed {
			ct.codes[r.code]++
			if r.code != 1 || !strings.Contains(r.stderr, "twinbox: ") {
				t.Errorf("the serve child was killed, but its client did not fail with an error:\n%s", r)
			}
		}
	case victimExecClient:
		pid := servePid(pidfile, p)
		killed = p.kill()
		if killed && pid > 0 && !waitGone(pid, 30*time.Second) {
			t.Errorf("the serve child %d still runs 30s after its client was killed", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if killed {
		ct.kills++
		ct.byVictim[v]++
		t.Logf("attempt %d: killed the %s after %v", ct.attempts, v, delay.Round(time.Millisecond))
	} else {
		r := p.wait(time.Minute)
		ct.finished++
		ct.codes[r.code]++
		// The next attempts do about as much as this one did: draw their
		// kill moments from its duration.
		ct.est = min(max(r.dur, 50*time.Millisecond), 5*time.Second)
		t.Logf("attempt %d: finished (exit %d) before the kill at %v", ct.attempts, r.code, delay.Round(time.Millisecond))
		if r.code != 0 && r.code != 2 {
			t.Errorf("a sync that was not interrupted failed:\n%s", r)
		}
	}
	ct.checkLocks()
	return killed
}

// checkLocks looks for Dovecot dotlocks the killed process left (no Dovecot
// runs in these tests: every lock file is twinbox's). Such a lock makes the
// next sync (and Dovecot) wait until it is stale (120 s) instead of
// converging: that is reported as a failure, and the locks are removed so
// that the rest of the test can run. A kill between the lock's creation and
// the write of its content leaves an empty lock file.
func (ct *crashTest) checkLocks() {
	var left []string
	for _, r := range []string{ct.a, ct.b} {
		for _, l := range lockFiles(r) {
			data, _ := os.ReadFile(l)
			left = append(left, fmt.Sprintf("%s (%q)", l, data))
			if len(data) == 0 {
				ct.emptyLocks++
				ct.t.Errorf("a killed sync left an empty dotlock %s: twinbox writes its locks through a temporary file and link(), so this must not happen", l)
			}
		}
	}
	if len(left) == 0 {
		return
	}
	// A SIGKILL cannot be caught, so its dotlocks stay; the next twinbox
	// (which holds the replica's own lock) must remove them at once and
	// converge: the rerun below checks that, and requireClean that none
	// is left at the end.
	ct.staleLocks += len(left)
	ct.t.Logf("the killed process left dotlock(s) %v; the next sync must break them", left)
}

// checkTempFiles looks for the temporary files of atomic writes
// (".dovecot-uidlist.tmp<hex>" and the like) that a killed process left
// next to the file it was replacing. Nothing removes them later, so each
// kill at the wrong moment leaves one for good: reported as a failure, then
// removed so that the rest of the test can run.
func (ct *crashTest) checkTempFiles() {
	var left []string
	for _, r := range []string{ct.a, ct.b} {
		left = append(left, atomicTempFiles(r)...)
	}
	if len(left) == 0 {
		return
	}
	ct.t.Errorf("BUG: killed syncs left %d temporary file(s) of atomic writes that the later syncs did not remove: %v", len(left), left)
	for _, f := range left {
		os.Remove(f)
	}
}

// servePid waits for the serve child to write its pid, or for the client to
// end; it returns 0 when there is no serve child.
func servePid(pidfile string, p *proc) int {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if data, err := os.ReadFile(pidfile); err == nil && strings.HasSuffix(string(data), "\n") {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
			return pid
		}
		if !p.running() {
			return 0
		}
		time.Sleep(time.Millisecond)
	}
	return 0
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	st := s[i+2]
	return st != 'Z' && st != 'X'
}

func waitGone(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !alive(pid) {
			return true
		}
	}
	return false
}

// converge runs the sync, uninterrupted, until it exits 0, at most max
// times.
func (ct *crashTest) converge(v victim, max int) {
	t := ct.t
	t.Helper()
	var last result
	for i := 0; i < max; i++ {
		ct.reruns++
		last = run(t, syncArgs(v)(ct.a, ct.b, filepath.Join(ct.dir, "rerun.pid"))...)
		ct.checkLocks()
		switch last.code {
		case 0:
			return
		case 2:
			t.Logf("rerun %d: exit 2 (changed during sync), again", i+1)
		default:
			t.Errorf("rerun %d after the kills failed:\n%s", i+1, last)
		}
	}
	t.Fatalf("no convergence after %d reruns; last:\n%s", max, last)
}

// verify checks everything a converged pair must satisfy.
func (ct *crashTest) verify() {
	t := ct.t
	t.Helper()
	ct.checkTempFiles()
	r := run(t, "check", ct.a, ct.b)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "identical" {
		t.Fatalf("check after convergence:\n%s", r)
	}
	requireClean(t, ct.c, true, ct.a, ct.b)
	requireIdle(t, ct.a, ct.b)
}

// requireIdle runs one more sync and requires that it did nothing and
// changed no file (contract §6).
func requireIdle(t testing.TB, a, b string, extra ...string) {
	t.Helper()
	before := listing(t, a, notIndex) + "\n--\n" + listing(t, b, notIndex)
	r := run(t, append(append([]string{"sync", "--json"}, extra...), a, b)...)
	if r.code != 0 {
		t.Fatalf("idle sync:\n%s", r)
	}
	s := parseSummary(t, r)
	if s.AppliedA.work() != 0 || s.AppliedB.work() != 0 || s.Changed || len(s.Held) > 0 || s.Renumbered != 0 {
		t.Fatalf("a sync right after convergence did something:\n%s", r)
	}
	if after := listing(t, a, notIndex) + "\n--\n" + listing(t, b, notIndex); after != before {
		t.Fatalf("a sync right after convergence changed files:\n%s", diffLines(before, after))
	}
}

// diffLines shows the lines only in a or only in b.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("... %d more", len(out)-40))
	}
	return strings.Join(out, "\n")
}

func (ct *crashTest) report() {
	ct.t.Logf("crash figures: %d attempts, %d kills (%d client, %d serve child, %d client of serve child), %d finished before the kill, %d reruns to converge, %d stale locks (%d empty), exit codes %v, %d messages",
		ct.attempts, ct.kills, ct.byVictim[victimClient], ct.byVictim[victimServe], ct.byVictim[victimExecClient],
		ct.finished, ct.reruns, ct.staleLocks, ct.emptyLocks, ct.codes, ct.c.count())
}

// kills is the number of kill attempts per test.
func kills() int {
	if longMode() {
		return 40
	}
	return 8
}

// budget bounds the time a crash test spends on kill attempts (on a loaded
// machine it makes fewer kills, but at least 3).
func budget() time.Duration {
	if longMode() {
		return 15 * time.Minute
	}
	return 30 * time.Second
}

// more reports whether to make another kill attempt.
func (ct *crashTest) more() bool {
	return ct.kills < kills() && ct.attempts < 3*kills() && (ct.kills < 3 || time.Now().Before(ct.deadline))
}

// messages is the size of the large sync.
func messages() int {
	if longMode() {
		return 3000
	}
	return 1500
}

// runCrash is the common body of the one-way crash tests: a large first sync
// into a replica that has some mail of its own.
func runCrash(t *testing.T, victims ...victim) {
	ct := newCrashTest(t)
	ct.deliverBatch(ct.a, ct.ga, messages(), len(crashFolders), 3)
	ct.deliverBatch(ct.b, ct.gb, messages()/10, 3, 0)
	syscall.Sync()
	ct.calibrate(syncArgs(victims[0]))
	defer ct.report()
	for ct.more() {
		v := victims[ct.rng.IntN(len(victims))]
		if !ct.attempt(v) {
			// Done before the kill: give the next attempts something to do.
			ct.deliverBatch(ct.a, ct.ga, messages()/3, len(crashFolders), 1)
			ct.deliverBatch(ct.b, ct.gb, messages()/10, len(crashFolders), 0)
			syscall.Sync()
		}
	}
	ct.converge(victims[0], 5)
	ct.verify()
}

func TestCrashKillClient(t *testing.T) { runCrash(t, victimClient) }

func TestCrashKillServeChild(t *testing.T) { runCrash(t, victimServe) }

// changeBoth makes changes on both sides, as users and MTAs would between
// syncs: newMail messages (half on each side, some into a new folder),
// flag changes on both sides (\Seen on A, \Flagged on B, both on some
// messages), and expunges on either side (some of them of messages the
// other side flags: the expunge wins), at most perBox per mailbox so that
// no mass-expunge guard triggers.
func (ct *crashTest) changeBoth(newMail, flagChanges, perBox int) {
	t := ct.t
	ct.round++
	ct.deliverBatch(ct.a, ct.ga, newMail/2, len(crashFolders), 0)
	ct.deliverBatch(ct.b, ct.gb, newMail/2, len(crashFolders), 0)
	side := ct.a
	g := ct.ga
	if ct.round%2 == 0 {
		side, g = ct.b, ct.gb
	}
	for i := 0; i < 5; i++ {
		g.deliver(t, side, fmt.Sprintf("Round%d", ct.round), g.message(ct.size()), "")
	}
	live := ct.c.live()
	flag := func(root string, m *message, letter string) {
		p := findFile(boxDir(root, m.box), m.base)
		if p == "" {
			return // not on this side yet
		}
		_, info, _ := strings.Cut(filepath.Base(p), ":")
		cur, _ := strings.CutPrefix(info, "2,")
		setFlags(t, root, m.box, m.base, union(cur, letter))
		m.flags = union(m.flags, letter)
	}
	for i := 0; i < flagChanges && len(live) > 0; i++ {
		m := live[ct.rng.IntN(len(live))]
		switch ct.rng.IntN(3) {
		case 0:
			flag(ct.a, m, "S")
		case 1:
			flag(ct.b, m, "F")
		default:
			flag(ct.a, m, "S")
			flag(ct.b, m, "F")
		}
	}
	gone := map[string]int{}
	for i := 0; i < 3*perBox && len(live) > 0; i++ {
		m := live[ct.rng.IntN(len(live))]
		if m.gone || gone[m.box] >= perBox {
			continue
		}
		root, other := ct.a, ct.b
		if ct.rng.IntN(2) == 0 {
			root, other = ct.b, ct.a
		}
		p := findFile(boxDir(root, m.box), m.base)
		if p == "" {
			continue
		}
		if ct.rng.IntN(3) == 0 {
			flag(other, m, "R") // the expunge must win
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		m.gone = true
		gone[m.box]++
	}
}

// TestCrashTwoWay kills either process, at random, of syncs where both sides
// have new mail, flag changes and expunges since their last sync.
func TestCrashTwoWay(t *testing.T) {
	ct := newCrashTest(t)
	ct.deliverBatch(ct.a, ct.ga, messages()/2, len(crashFolders), 2)
	ct.deliverBatch(ct.b, ct.gb, messages()/10, 3, 0)
	if r := run(t, syncArgs(victimClient)(ct.a, ct.b, "")...); r.code != 0 {
		t.Fatalf("first sync:\n%s", r)
	}
	ct.changeBoth(messages()/2, messages()/5, 10)
	syscall.Sync()
	ct.calibrate(syncArgs(victimClient))
	defer ct.report()
	victims := []victim{victimClient, victimServe, victimExecClient}
	for ct.more() {
		if !ct.attempt(victims[ct.rng.IntN(len(victims))]) {
			ct.changeBoth(messages()/5, messages()/20, 5)
			syscall.Sync()
		}
	}
	ct.converge(victimClient, 5)
	ct.verify()
}

// TestLeftoverDotlockOfKilledSync is what a SIGKILL while twinbox holds a
// mailbox's dovecot-uidlist.lock leaves behind, made deterministic: a lock
// file in twinbox's format whose process is gone. The next sync must still
// converge (contract §6: "the next sync converges"), not wait for the lock to
// turn stale after 120 s and time out.
func TestLeftoverDotlockOfKilledSync(t *testing.T) {
	a, b := pair(t)
	g := newMailGen(newRand(1), "a", newCorpus())
	g.deliver(t, a, "Work", g.message(3000), "")
	syncOK(t, a, b)
	g.deliver(t, a, "Work", g.message(3000), "S")
	// A process that has exited: its pid names no process.
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(boxDir(b, "Work"), "dovecot-uidlist.lock")
	if err := os.WriteFile(lock, []byte(fmt.Sprintf("twinbox %d 0123456789abcdef", dead.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, "sync", "--lock-timeout", "3s", a, b)
	if r.code != 0 {
		t.Errorf("BUG: a dotlock left by a killed twinbox blocks the next sync until it is stale (120 s):\n%s", r)
		os.Remove(lock)
		syncOK(t, a, b)
	}
	runWant(t, 0, "check", a, b)
	requireClean(t, g.c, true, a, b)
}
