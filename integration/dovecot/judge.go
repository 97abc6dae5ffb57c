// Package dovecot uses Dovecot's own doveadm as the judge of Maildir replicas.
//
// A Judge runs doveadm (never as root: doveadm refuses mail access as root) as the
// unprivileged user TestUser, with a private minimal configuration file (no system
// config), reads one Maildir root into a View (mailboxes, UIDs, GUIDs, flags, keywords,
// INTERNALDATEs, body hashes, subscriptions) and collects every warning or error that
// Dovecot printed while doing so. Diff compares two views; View.Check reports problems
// within one view.
//
// Reading is not free of side effects: like any Dovecot process, doveadm may write into
// the root it reads. With the default options (in-memory indexes) it writes no
// dovecot.index* files, but it does
//   - assign UIDs to files the dovecot-uidlist does not list, rewriting dovecot-uidlist;
//   - rewrite the dovecot-uidlist of an empty mailbox (same content, new mtime) every
//     time it opens it with in-memory indexes (with DiskIndexes only the first time);
//   - create dovecot-uidlist (with a fresh mailbox GUID and UIDVALIDITY), and the root's
//     dovecot-uidvalidity and dovecot-uidvalidity.<hex> files, for a mailbox that has
//     no dovecot-uidlist yet;
//   - "repair" a duplicate base name by renaming one of the files to a new base name
//     ("Fixed a duplicate"), and give a reappeared expunged base name a new UID.
//
// It does not move files from new/ to cur/ (only IMAP sessions do that) and does not
// rewrite dovecot-uidlist for flag changes. With DiskIndexes() it also writes
// dovecot.index* and dovecot.list.index* files, which twinbox ignores. Use Snapshot()
// to read a copy and leave the replica untouched.
//
// Reading in place changes the ownership of the tree to TestUser (see Judge.Own).
// Processes running as root (twinbox in tests) do not care.
package dovecot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestUser is the unprivileged system user doveadm runs as when the tests run as root
// (created by scripts/test-deps.sh).
const TestUser = "twinboxtest"

// RequireEnv is the environment variable that, set to 1, turns a missing or unusable
// Dovecot into a test failure instead of a skip.
const RequireEnv = "TWINBOX_REQUIRE_DOVECOT"

// DefaultTimeout bounds every doveadm invocation.
const DefaultTimeout = 2 * time.Minute

// Version is a Dovecot version as printed by `dovecot --version`.
type Version struct {
	Major, Minor, Patch int
	Raw                 string // e.g. "2.3.19.1 (9b53102964)"
}

func (v Version) String() string { return v.Raw }

// Is24 reports whether the version uses the 2.4 settings (mail_driver, mail_path, ...)
// instead of 2.3's mail_location.
func (v Version) Is24() bool { return v.Major > 2 || v.Major == 2 && v.Minor >= 4 }

// runtimeEnv is what probing one Dovecot installation (the host's, or the one in a
// chroot: see chroot.go) found out, once per process.
type runtimeEnv struct {
	chroot   string // "" for the host's Dovecot; else the root it runs in (chroot.go)
	doveadm  string // path of doveadm (inside chroot, if set)
	dovecot  string // path of the dovecot master binary (inside chroot, if set)
	version  Version
	userName string
	uid, gid int
	groups   []uint32
	switchTo bool // run doveadm with the credentials above (we are root)
}

var (
	probeOnce sync.Once
	probeEnv  *runtimeEnv
	probeErr  error
)

// Available reports whether doveadm is installed and usable: it finds doveadm and the
// Dovecot version, the user to run it as (TestUser when running as root, else the
// current user), and lists an empty Maildir with it. The result is cached.
func Available() error {
	_, err := probe()
	return err
}

// DovecotVersion returns the detected Dovecot version (zero when unavailable).
func DovecotVersion() Version {
	e, err := probe()
	if err != nil {
		return Version{}
	}
	return e.version
}

// probe probes the host's Dovecot (once).
func probe() (*runtimeEnv, error) {
	probeOnce.Do(func() { probeEnv, probeErr = detect("") })
	return probeEnv, probeErr
}

func findBinary(name string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(dirs, ", "))
}

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion parses the output of `dovecot --version`.
func ParseVersion(s string) (Version, error) {
	s = strings.TrimSpace(s)
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("cannot parse Dovecot version %q", s)
	}
	v := Version{Raw: s}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// detect probes the host's Dovecot (chroot "") or the one installed in the root chroot.
func detect(chroot string) (*runtimeEnv, error) {
	e := &runtimeEnv{chroot: chroot}
	var err error
	if chroot != "" {
		if err := e.checkChroot(); err != nil {
			return nil, err
		}
	} else {
		const hint = "install it with scripts/test-deps.sh (as root)"
		if e.doveadm, err = findBinary("doveadm", "/usr/bin", "/usr/local/bin"); err != nil {
			return nil, fmt.Errorf("dovecot: %v; %s", err, hint)
		}
		if e.dovecot, err = findBinary("dovecot", "/usr/sbin", "/usr/local/sbin"); err != nil {
			return nil, fmt.Errorf("dovecot: %v (needed for the version); %s", err, hint)
		}
	}
	out, err := e.command(context.Background(), nil, false, e.dovecot, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("dovecot: %s%s --version: %v", chroot, e.dovecot, err)
	}
	if e.version, err = ParseVersion(string(out)); err != nil {
		return nil, fmt.Errorf("dovecot: %v", err)
	}
	if e.version.Major < 2 || e.version.Major == 2 && e.version.Minor < 3 {
		return nil, fmt.Errorf("dovecot: version %s is too old (need 2.3 or 2.4)", e.version)
	}

	if os.Geteuid() == 0 {
		u, err := user.Lookup(TestUser)
		if err != nil {
			return nil, fmt.Errorf("dovecot: running as root but user %q is missing (%v); create it with scripts/test-deps.sh", TestUser, err)
		}
		e.userName = u.Username
		e.uid, _ = strconv.Atoi(u.Uid)
		e.gid, _ = strconv.Atoi(u.Gid)
		if e.uid == 0 {
			return nil, fmt.Errorf("dovecot: user %q has uid 0", TestUser)
		}
		gids, _ := u.GroupIds()
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				e.groups = append(e.groups, uint32(n))
			}
		}
		e.switchTo = true
		if chroot != "" {
			if err := e.checkChrootUser(); err != nil {
				return nil, err
			}
		}
	} else if chroot != "" {
		return nil, fmt.Errorf("dovecot: the Dovecot in %s needs root (chroot, mounts)", chroot)
	} else {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("dovecot: current user: %v", err)
		}
		e.userName = u.Username
		e.uid, e.gid = os.Getuid(), os.Getgid()
	}

	// Smoke test: list an empty Maildir.
	j, err := newJudge(e)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(j.dir)
	root := filepath.Join(j.dir, "smoke")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := j.chownTree(root); err != nil {
		return nil, err
	}
	res, err := j.run(readOptions{}, root, "-f", "json", "mailbox", "list")
	if err != nil {
		return nil, fmt.Errorf("dovecot: doveadm smoke test failed: %v", err)
	}
	if !bytes.Contains(res.stdout, []byte(`"INBOX"`)) || len(res.warnings) > 0 {
		return nil, fmt.Errorf("dovecot: doveadm smoke test: unexpected output %q, warnings %q", res.stdout, res.warnings)
	}
	return e, nil
}

// Judge reads Maildir roots with doveadm. Make one per test with NewJudge.
type Judge struct {
	env     *runtimeEnv
	dir     string // private working directory: config, base_dir, log, home
	conf    string
	logPath string
	snaps   int

	// Timeout bounds each doveadm invocation (DefaultTimeout).
	Timeout time.Duration
}

// NewJudge returns a Judge for the test, or skips the test with a clear message when
// doveadm is missing or unusable (fails it instead when TWINBOX_REQUIRE_DOVECOT=1).
// Its temporary files are removed when the test ends.
func NewJudge(t testing.TB) *Judge {
	t.Helper()
	return NewJudgeFor(t, nil)
}

// NewJudgeFor is NewJudge with the doveadm of the installation d (nil: the host's).
func NewJudgeFor(t testing.TB, d *Install) *Judge {
	t.Helper()
	e, err := d.probe()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%v (%s=1 makes this fatal)", err, RequireEnv)
		}
		t.Skipf("skipping Dovecot judge: %v (set %s=1 to fail instead)", err, RequireEnv)
	}
	j, err := newJudge(e)
	if err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(j.dir) })
	return j
}

// User returns the name of the user doveadm runs as.
func (j *Judge) User() string { return j.env.userName }

// Version returns the Dovecot version in use.
func (j *Judge) Version() Version { return j.env.version }

// ConfigPath returns the configuration file the Judge passes to doveadm with -c.
func (j *Judge) ConfigPath() string { return j.conf }

func newJudge(e *runtimeEnv) (*Judge, error) {
	dir, err := os.MkdirTemp("", "twinbox-judge-")
	if err != nil {
		return nil, err
	}
	j := &Judge{env: e, dir: dir, conf: filepath.Join(dir, "dovecot.conf"),
		logPath: filepath.Join(dir, "dovecot.log"), Timeout: DefaultTimeout}
	fail := func(err error) (*Judge, error) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("dovecot: setting up %s: %v", dir, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(j.conf, []byte(j.config()), 0o644); err != nil {
		return fail(err)
	}
	if err := j.chownTree(dir); err != nil {
		return fail(err)
	}
	return j, nil
}

// config is the minimal configuration: no system config, our own base_dir and log,
// one inbox namespace with "/" as separator (so folder a/b is "a/b" in both layouts).
// The mail location is given per call with -o (see locationArgs). No userdb: doveadm
// runs without -u (the user from $USER, no auth lookup), as the user owning the files.
func (j *Judge) config() string {
	var b strings.Builder
	b.WriteString("# Written by twinbox integration/dovecot: the Dovecot judge's private config.\n")
	if j.env.version.Is24() {
		v := fmt.Sprintf("%d.%d.%d", j.env.version.Major, j.env.version.Minor, j.env.version.Patch)
		fmt.Fprintf(&b, "dovecot_config_version = %s\ndovecot_storage_version = %s\n", v, v)
	}
	fmt.Fprintf(&b, "base_dir = %s\n", filepath.Join(j.dir, "run"))
	fmt.Fprintf(&b, "log_path = %s\n", j.logPath)
	b.WriteString("stats_writer_socket_path =\n")
	b.WriteString("ssl = no\n")
	b.WriteString("namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =\n}\n")
	return b.String()
}

// readOptions are the Read options.
type readOptions struct {
	layoutFS    bool
	utf8        bool
	snapshot    bool
	diskIndexes bool
}

// Option changes how Read reads a root.
type Option func(*readOptions)

// LayoutFS reads the root with LAYOUT=fs (folder a/b is the directory a/b).
func LayoutFS() Option { return func(o *readOptions) { o.layoutFS = true } }

// UTF8 reads the root with folder names stored on disk as UTF-8, not modified UTF-7
// (2.3: the mail_location key UTF-8; 2.4: mailbox_list_utf8 = yes).
func UTF8() Option { return func(o *readOptions) { o.utf8 = true } }

// Snapshot makes Read copy the root into the Judge's private directory and read the
// copy: the replica is left exactly as it was (no chown, no file Dovecot writes or
// repairs). The View's Root is still the original path.
func Snapshot() Option { return func(o *readOptions) { o.snapshot = true } }

// DiskIndexes lets doveadm keep its index files (dovecot.index*, dovecot.list.index*)
// in the root, like a running Dovecot would, instead of in memory. Later reads then use
// those caches.
func DiskIndexes() Option { return func(o *readOptions) { o.diskIndexes = true } }

// locationArgs returns the -o options that point doveadm at root.
func (j *Judge) locationArgs(o readOptions, root string) ([]string, error) {
	if j.env.version.Is24() {
		args := []string{"-o", "mail_driver=maildir", "-o", "mail_path=" + root}
		if o.layoutFS {
			args = append(args, "-o", "mailbox_list_layout=fs")
		}
		if o.utf8 {
			args = append(args, "-o", "mailbox_list_utf8=yes")
		}
		if !o.diskIndexes {
			args = append(args, "-o", "mail_index_path=MEMORY")
		}
		return args, nil
	}
	if strings.ContainsAny(root, ":\n") {
		return nil, fmt.Errorf("dovecot: root %q contains ':' which mail_location cannot express", root)
	}
	loc := "maildir:" + root
	if o.layoutFS {
		loc += ":LAYOUT=fs"
	}
	if o.utf8 {
		loc += ":UTF-8" // the 2.3 key is spelled UTF-8 ("UTF8" is an unknown setting)
	}
	if !o.diskIndexes {
		loc += ":INDEX=MEMORY"
	}
	return []string{"-o", "mail_location=" + loc}, nil
}

type runResult struct {
	stdout   []byte
	warnings []string
	exitCode int
}

// run runs one doveadm command against root and collects the warning lines from its
// stderr and its log file. It fails when doveadm could not run or exited non-zero
// without output; a non-zero exit with output is recorded as a warning.
func (j *Judge) run(o readOptions, root string, args ...string) (*runResult, error) {
	loc, err := j.locationArgs(o, root)
	if err != nil {
		return nil, err
	}
	if j.env.version.Is24() {
		args = noUserdbLookup(args)
	}
	full := append(append([]string{"-c", j.conf}, loc...), args...)
	timeout := j.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := j.env.command(ctx, []string{j.dir, root}, j.env.switchTo, j.env.doveadm, full...)
	cmd.Dir = j.dir
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"USER=" + j.env.userName,
		"HOME=" + j.dir,
		"LANG=C",
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	logged, _ := os.ReadFile(j.logPath)
	if len(logged) > 0 {
		_ = os.Truncate(j.logPath, 0)
	}
	res := &runResult{stdout: stdout.Bytes()}
	res.warnings = append(filterLog(stderr.String()), filterLog(string(logged))...)
	desc := "doveadm " + strings.Join(args, " ")
	if runErr != nil {
		var ee *exec.ExitError
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dovecot: %s: timed out after %v; stderr: %s", desc, timeout, stderr.String())
		}
		if !errors.As(runErr, &ee) {
			return nil, fmt.Errorf("dovecot: %s: %v", desc, runErr)
		}
		res.exitCode = ee.ExitCode()
		if len(bytes.TrimSpace(res.stdout)) == 0 {
			return nil, fmt.Errorf("dovecot: %s: %v; stderr: %s", desc, runErr, strings.TrimSpace(stderr.String()))
		}
		res.warnings = append(res.warnings, fmt.Sprintf("%s: exit status %d", desc, res.exitCode))
	}
	return res, nil
}

// noUserdbLookup adds --no-userdb-lookup after the command name of a doveadm command
// line (global "-f FORMAT" first; "mailbox list", "fetch", ...): doveadm 2.4 wants one
// of -u, -F, -A or --no-userdb-lookup for a mail command, where 2.3 took $USER.
func noUserdbLookup(args []string) []string {
	i := 0
	for i+1 < len(args) && args[i] == "-f" {
		i += 2
	}
	if i < len(args) && args[i] == "mailbox" {
		i++
	}
	if i < len(args) {
		i++
	}
	out := append(append(append([]string{}, args[:i]...), "--no-userdb-lookup"), args[i:]...)
	return out
}

var levelRE = regexp.MustCompile(`(^|[\s:>)\]])(Warning|Error|Panic|Fatal): `)

// filterLog returns the lines that are warnings or worse, or that match BadLogPatterns.
func filterLog(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if levelRE.MatchString(line) || matchBadPattern(line) != "" {
			out = append(out, line)
		}
	}
	return out
}

// Own makes root readable and writable by the user doveadm runs as: it changes the
// owner of every file and directory under root (root included) to that user, and makes
// the directories above root searchable by it when they lie inside the temporary
// directory (t.TempDir() creates them mode 0700). Outside the temporary directory an
// unsearchable parent is an error: use Snapshot() there. When the tests do not run as
// root, Own only checks that root exists.
//
// doveadm may write dovecot.index* files (with DiskIndexes) and the control files
// described in the package comment while reading; twinbox ignores dovecot.index*.
func (j *Judge) Own(root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if _, err := os.Stat(root); err != nil {
		return fmt.Errorf("dovecot: %v", err)
	}
	if !j.env.switchTo {
		return nil
	}
	if err := j.reachable(root); err != nil {
		return err
	}
	return j.chownTree(root)
}

// Doveadm runs one doveadm mail command against root, in place (after
// Own(root)) and with indexes on disk, as a Dovecot beside twinbox would act
// on it (a DELETE is recorded in dovecot.mailbox.log): for example
// "mailbox", "create", "S2". It returns doveadm's output, and an error when
// doveadm failed or printed a warning.
func (j *Judge) Doveadm(root string, args ...string) (string, error) {
	if err := j.Own(root); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	res, err := j.run(readOptions{diskIndexes: true}, abs, args...)
	if err != nil {
		return "", err
	}
	if len(res.warnings) > 0 {
		return string(res.stdout), fmt.Errorf("dovecot: doveadm %s: %s", strings.Join(args, " "), strings.Join(res.warnings, "; "))
	}
	return string(res.stdout), nil
}

func (j *Judge) chownTree(root string) error {
	if !j.env.switchTo {
		return nil
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // vanished while walking
			}
			return err
		}
		if err := os.Lchown(p, j.env.uid, j.env.gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("dovecot: chown %s: %v", p, err)
		}
		return nil
	})
}

// reachable makes every directory above root searchable by the judge's user, when it is
// inside the temporary directory.
func (j *Judge) reachable(root string) error {
	tmp, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		tmp = os.TempDir()
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !j.canSearch(st) {
			rel, err := filepath.Rel(tmp, dir)
			if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
				return fmt.Errorf("dovecot: %s is not searchable by user %s, so doveadm cannot reach %s; use Snapshot() or a root under %s", dir, j.env.userName, root, tmp)
			}
			if err := os.Chmod(dir, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("dovecot: chmod o+x %s: %v", dir, err)
			}
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func (j *Judge) canSearch(st os.FileInfo) bool {
	perm := st.Mode().Perm()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if int(sys.Uid) == j.env.uid {
			return perm&0o100 != 0
		}
		if int(sys.Gid) == j.env.gid {
			return perm&0o010 != 0
		}
		for _, g := range j.env.groups {
			if g == sys.Gid {
				return perm&0o010 != 0
			}
		}
	}
	return perm&0o001 != 0
}
