package integration

import (
	"encoding/json"
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

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testbin"
)

// bin is the twinbox binary TestMain built for this run.
var bin string

// TestMain builds the binary once, into a temporary directory, for all tests
// (TWINBOX_TEST_BINARY=PATH uses a binary built before instead).
func TestMain(m *testing.M) {
	var cleanup func()
	var err error
	if bin, cleanup, err = testbin.Build("twinbox-integration-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// longMode reports whether TWINBOX_LONG=1 asks for the long runs.
func longMode() bool { return os.Getenv("TWINBOX_LONG") == "1" }

// seed returns the test's random seed: TWINBOX_SEED if set, else a new one.
// It is logged so that a failing run can be replayed.
func seed(t testing.TB) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("TWINBOX_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TWINBOX_SEED=%q: %v", v, err)
		}
		s = n
	}
	t.Logf("seed %d (replay with TWINBOX_SEED=%d)", s, s)
	return s
}

func newRand(s uint64) *rand.Rand { return rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15)) }

// env is the environment the binary runs with: ours without TWINBOX_*
// settings, which would change its flags.
func env() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TWINBOX_") {
			out = append(out, kv)
		}
	}
	// Every run checks its indexes' invariants as it closes them and
	// says so on stderr (index.VerifyEnv); the tests fail on that line.
	return append(out, index.VerifyEnv+"=1")
}

// brokenIndex is what the binary prints when an index invariant is broken.
const brokenIndex = "index invariant broken"

// cmdTimeout bounds every run of the binary that is not killed on purpose.
const cmdTimeout = 3 * time.Minute

// result is a finished run of the binary.
type result struct {
	args           []string
	code           int // exit code; -1 when killed by a signal
	signal         syscall.Signal
	stdout, stderr string
	dur            time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("twinbox %s: exit %d after %v\nstdout:\n%s\nstderr:\n%s",
		strings.Join(r.args, " "), r.code, r.dur.Round(time.Millisecond), r.stdout, r.stderr)
}

// proc is a running twinbox process whose output goes to files (not pipes: a
// child it starts inherits them, and a pipe would keep Wait waiting for that
// child after we killed its parent).
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	args    []string
	start   time.Time
	out     *os.File
	err     *os.File
	done    chan struct{}
	waitErr error
}

// start runs the binary with args in the background.
func start(t testing.TB, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables (KEY=VALUE).
func startEnv(t testing.TB, extra []string, args ...string) *proc {
	t.Helper()
	return startAs(t, nil, extra, args...)
}

// startAs is startEnv running the binary with the given credentials (nil:
// ours).
func startAs(t testing.TB, cred *syscall.Credential, extra []string, args ...string) *proc {
	t.Helper()
	return startIn(t, cred, nil, extra, args...)
}

// startIn is startAs running the binary through prefix (a command that
// ends by exec'ing its arguments, such as `ip netns exec NS`).
func startIn(t testing.TB, cred *syscall.Credential, prefix []string, extra []string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	if len(prefix) > 0 {
		cmd = exec.Command(prefix[0], append(append(prefix[1:len(prefix):len(prefix)], bin), args...)...)
	}
	cmd.Env = append(env(), extra...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
		for _, f := range []*os.File{out, errf} {
			if err := f.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd.Stdout, cmd.Stderr = out, errf
	p := &proc{t: t, cmd: cmd, args: args, out: out, err: errf, done: make(chan struct{})}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting twinbox: %v", err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		out.Close()
		errf.Close()
	})
	return p
}

// kill sends SIGKILL (if the process still runs) and reports whether it was
// still running.
func (p *proc) kill() bool {
	select {
	case <-p.done:
		return false
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return p.killed()
}

func (p *proc) killed() bool {
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		return ws.Signaled() && ws.Signal() == syscall.SIGKILL
	}
	return false
}

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits up to timeout for the process; on timeout it kills it and fails
// the test.
func (p *proc) wait(timeout time.Duration) result {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		r := p.result()
		p.t.Fatalf("twinbox did not finish within %v; killed it:\n%s", timeout, r)
	}
	return p.result()
}

func (p *proc) result() result {
	r := result{args: p.args, code: p.cmd.ProcessState.ExitCode(), dur: time.Since(p.start)}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		r.signal = ws.Signal()
	}
	o, _ := os.ReadFile(p.out.Name())
	e, _ := os.ReadFile(p.err.Name())
	r.stdout, r.stderr = string(o), string(e)
	if strings.Contains(r.stderr, brokenIndex) {
		p.t.Errorf("%s", r)
	}
	return r
}

// run runs the binary to completion.
func run(t testing.TB, args ...string) result {
	t.Helper()
	return start(t, args...).wait(cmdTimeout)
}

// runWant runs the binary and fails the test unless it exits with want.
func runWant(t testing.TB, want int, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != want {
		t.Fatalf("want exit %d, got:\n%s", want, r)
	}
	return r
}

// syncSummary is the part of `sync --json` the tests read.
type syncSummary struct {
	Mode       string       `json:"mode"`
	Mailboxes  int          `json:"mailboxes"`
	Full       int          `json:"mailboxes_compared_in_full"`
	A          replicaInfo  `json:"a"`
	B          replicaInfo  `json:"b"`
	AppliedA   *applyResult `json:"applied_a"`
	AppliedB   *applyResult `json:"applied_b"`
	Renumbered int          `json:"renumbered"`
	Merged     []string     `json:"merged"`
	Held       []struct {
		Mailbox string `json:"mailbox"`
		Count   int    `json:"count"`
	} `json:"held"`
	Changed    bool     `json:"changed_during_sync"`
	Plan       []string `json:"plan"`
	RoundTrips *int     `json:"round_trips"`
	ExitCode   *int     `json:"exit_code"`
}

type replicaInfo struct {
	ReplicaID string `json:"replica_id"`
	IndexID   string `json:"index_id"`
	Root      string `json:"root"`
}

type applyResult struct {
	Added      int      `json:"added"`
	Linked     int      `json:"linked"`
	Fetched    int      `json:"fetched"`
	Expunged   int      `json:"expunged"`
	Flagged    int      `json:"flagged"`
	Moved      int      `json:"moved"`
	Bytes      int64    `json:"bytes"`
	MailboxOps int      `json:"mailbox_ops"`
	Changed    bool     `json:"changed"`
	Skipped    []string `json:"skipped"`
}

// work is the number of things the apply did.
func (a *applyResult) work() int {
	if a == nil {
		return 0
	}
	return a.Added + a.Linked + a.Fetched + a.Expunged + a.Flagged + a.Moved + a.MailboxOps + int(a.Bytes)
}

// parseSummary decodes the --json output of a sync or backup.
func parseSummary(t testing.TB, r result) *syncSummary {
	t.Helper()
	var s syncSummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("cannot parse the --json summary: %v\n%s", err, r)
	}
	if s.ExitCode == nil || s.RoundTrips == nil {
		t.Fatalf("--json summary lacks exit_code or round_trips:\n%s", r)
	}
	if *s.ExitCode != r.code {
		t.Fatalf("--json says exit_code %d, the process exited %d:\n%s", *s.ExitCode, r.code, r)
	}
	return &s
}
