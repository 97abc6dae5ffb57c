package imap

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

// TestMain builds the binary once (TWINBOX_TEST_BINARY=PATH uses one built
// before), as integration/main_test.go does.
func TestMain(m *testing.M) {
	var cleanup func()
	var err error
	if bin, cleanup, err = testbin.Build("twinbox-imap-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, "imap:", err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// longMode reports whether TWINBOX_LONG=1 asks for the long runs.
func longMode() bool { return os.Getenv("TWINBOX_LONG") == "1" }

// seed returns TWINBOX_SEED if set, else a new seed; the caller reports it
// on failure.
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
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d: replay with TWINBOX_SEED=%d", s, s)
		}
	})
	return s
}

func newRand(s uint64) *rand.Rand { return rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15)) }

// env is our environment without TWINBOX_* settings, which would change the
// binary's flags.
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
	code           int // -1 when killed by a signal
	killed         bool
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("twinbox %s: exit %d (killed %v)\nstdout:\n%s\nstderr:\n%s",
		strings.Join(r.args, " "), r.code, r.killed, r.stdout, r.stderr)
}

// proc is a running twinbox.
type proc struct {
	cmd      *exec.Cmd
	args     []string
	out, err *os.File
	done     chan struct{}
}

// start runs the binary in the background; output goes to files in dir.
func start(t testing.TB, extraEnv []string, args ...string) *proc {
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
	cmd.Env = append(env(), extraEnv...)
	cmd.Stdout, cmd.Stderr = out, errf
	p := &proc{cmd: cmd, args: args, out: out, err: errf, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting twinbox: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		out.Close()
		errf.Close()
	})
	return p
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

// kill sends SIGKILL if the process still runs.
func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// wait waits (bounded) for the process and returns its result.
func (p *proc) wait(t testing.TB) result {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(cmdTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("twinbox %s did not finish within %v; killed it", strings.Join(p.args, " "), cmdTimeout)
	}
	r := result{args: p.args, code: p.cmd.ProcessState.ExitCode()}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		r.killed = ws.Signal() == syscall.SIGKILL
	}
	o, _ := os.ReadFile(p.out.Name())
	e, _ := os.ReadFile(p.err.Name())
	r.stdout, r.stderr = string(o), string(e)
	if strings.Contains(r.stderr, brokenIndex) {
		t.Errorf("twinbox %s:\n%s", strings.Join(p.args, " "), r.stderr)
	}
	return r
}

// run runs the binary to completion.
func run(t testing.TB, extraEnv []string, args ...string) result {
	t.Helper()
	return start(t, extraEnv, args...).wait(t)
}

// summary is the part of `sync --json` the tests read.
type summary struct {
	AppliedA *applyResult `json:"applied_a"`
	AppliedB *applyResult `json:"applied_b"`
	Changed  bool         `json:"changed_during_sync"`
	ExitCode *int         `json:"exit_code"`
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
	Skipped    []string `json:"skipped"`
}

func (a *applyResult) work() int {
	if a == nil {
		return 0
	}
	return a.Added + a.Linked + a.Fetched + a.Expunged + a.Flagged + a.Moved + a.MailboxOps + int(a.Bytes)
}

func parseSummary(t testing.TB, r result) *summary {
	t.Helper()
	var s summary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.ExitCode == nil {
		t.Fatalf("cannot parse the --json summary (%v):\n%s", err, r)
	}
	return &s
}
