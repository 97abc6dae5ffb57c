package dovecot

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Dovecot 2.4 for the tests comes from a minimal Debian 13 (trixie) root that
// scripts/dovecot24-chroot.sh builds (as root, from scripts/test-deps.sh) at ChrootDir.
// Every Dovecot process of that installation (the master of a Server, each doveadm of a
// Judge) runs as
//
//	unshare --mount --propagation private -- sh -c SCRIPT ... -- chroot [--userspec U:G] ROOT CMD...
//
// where SCRIPT, inside the new private mount namespace, mounts a tmpfs on ROOT/tmp and
// proc on ROOT/proc and bind-mounts each directory the process needs (the Server's or
// Judge's working directory, the mail root read) at the same path inside ROOT. So
// Dovecot in the root and twinbox on the host see the same files under the same paths,
// nothing is mounted outside the namespace, and the mounts go when its last process
// exits. The root carries the host's test users with their host uid/gid.

// ChrootEnv names the environment variable that overrides DefaultChroot.
const ChrootEnv = "TWINBOX_TRIXIE_ROOT"

// DefaultChroot is where scripts/dovecot24-chroot.sh builds the trixie root.
const DefaultChroot = "/var/cache/twinbox/trixie"

// ChrootDir returns the trixie root the 2.4 tests use ($TWINBOX_TRIXIE_ROOT or
// DefaultChroot).
func ChrootDir() string {
	if d := os.Getenv(ChrootEnv); d != "" {
		return d
	}
	return DefaultChroot
}

// Install is one Dovecot installation the tests can run. The nil *Install is the
// host's Dovecot (the installed dovecot/doveadm binaries); Trixie() is Dovecot 2.4 in
// the trixie root.
type Install struct {
	chroot string
}

// Trixie returns the Dovecot 2.4 installation in the trixie root (ChrootDir). Whether
// it is usable shows when a test uses it: StartServer and NewJudgeFor skip (or fail,
// with TWINBOX_REQUIRE_DOVECOT=1) when the root is missing.
func Trixie() *Install { return &Install{chroot: ChrootDir()} }

// Chroot returns the root the installation runs in ("" for the host).
func (d *Install) Chroot() string {
	if d == nil {
		return ""
	}
	return d.chroot
}

func (d *Install) String() string {
	if d.Chroot() == "" {
		return "the host's Dovecot"
	}
	return "the Dovecot in " + d.chroot
}

// Version returns the installation's Dovecot version (zero when unusable).
func (d *Install) Version() Version {
	e, err := d.probe()
	if err != nil {
		return Version{}
	}
	return e.version
}

// Available reports whether the installation is usable (see the package function
// Available).
func (d *Install) Available() error {
	_, err := d.probe()
	return err
}

var chrootProbes sync.Map // root -> *chrootProbe

type chrootProbe struct {
	once sync.Once
	env  *runtimeEnv
	err  error
}

func (d *Install) probe() (*runtimeEnv, error) {
	if d.Chroot() == "" {
		return probe()
	}
	v, _ := chrootProbes.LoadOrStore(d.chroot, &chrootProbe{})
	p := v.(*chrootProbe)
	p.once.Do(func() { p.env, p.err = detect(d.chroot) })
	return p.env, p.err
}

// Series is "MAJOR.MINOR" ("2.3").
func (v Version) Series() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// ForEach runs f as a subtest for each Dovecot version the tests cover: the host's
// Dovecot (subtest named by its series, "2.3" on Debian 12; "host" when it is missing,
// where f's StartServer/NewJudgeFor then skip), and Dovecot 2.4 from the trixie root
// (subtest "2.4"; skipped, or failed with TWINBOX_REQUIRE_DOVECOT=1, when the root is
// missing). When the host's Dovecot is itself 2.4 the chroot is not run.
func ForEach(t *testing.T, f func(t *testing.T, d *Install)) {
	t.Helper()
	name := "host"
	if e, err := probe(); err == nil {
		name = e.version.Series()
	}
	t.Run(name, func(t *testing.T) { f(t, nil) })
	if name == "2.4" {
		t.Logf("the host's Dovecot is %s: the trixie root is not needed", name)
		return
	}
	t.Run("2.4", func(t *testing.T) { f(t, Trixie()) })
}

// checkChroot checks that the trixie root is built and that this machine can use it.
func (e *runtimeEnv) checkChroot() error {
	const hint = "build it with scripts/dovecot24-chroot.sh or `make test-deps` (as root)"
	if _, err := os.Stat(filepath.Join(e.chroot, ".twinbox-ready")); err != nil {
		return fmt.Errorf("dovecot: no Dovecot 2.4 root at %s (%v); %s", e.chroot, err, hint)
	}
	e.dovecot, e.doveadm = "/usr/sbin/dovecot", "/usr/bin/doveadm"
	for _, b := range []string{e.dovecot, e.doveadm} {
		if _, err := os.Stat(filepath.Join(e.chroot, b)); err != nil {
			return fmt.Errorf("dovecot: %v; %s", err, hint)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("dovecot: the Dovecot 2.4 root %s needs root (chroot, mounts)", e.chroot)
	}
	for _, b := range []string{"unshare", "chroot", "mount"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("dovecot: %s is needed to run the Dovecot in %s: %v", b, e.chroot, err)
		}
	}
	return nil
}

// checkChrootUser checks that the root knows TestUser under the host's uid and gid.
func (e *runtimeEnv) checkChrootUser() error {
	f, err := os.Open(filepath.Join(e.chroot, "etc", "passwd"))
	if err != nil {
		return fmt.Errorf("dovecot: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 4 || fs[0] != e.userName {
			continue
		}
		if fs[2] != strconv.Itoa(e.uid) || fs[3] != strconv.Itoa(e.gid) {
			return fmt.Errorf("dovecot: user %s is %s:%s in %s but %d:%d on the host; run scripts/dovecot24-chroot.sh again",
				e.userName, fs[2], fs[3], e.chroot, e.uid, e.gid)
		}
		return nil
	}
	return fmt.Errorf("dovecot: user %s missing in %s/etc/passwd; run scripts/dovecot24-chroot.sh again", e.userName, e.chroot)
}

// chrootScript runs as `sh -c chrootScript twinbox-chroot ROOT USERSPEC GROUPS DIR... -- CMD...`
// inside a private mount namespace (see the comment at the top of the file).
const chrootScript = `set -e
root=$1 spec=$2 groups=$3
shift 3
mount -t tmpfs -o mode=1777 twinbox-tmp "$root/tmp"
mount -t proc proc "$root/proc"
while [ "$1" != -- ]; do
	mkdir -p "$root$1"
	mount --bind "$1" "$root$1"
	shift
done
shift
if [ -n "$spec" ]; then
	exec chroot --userspec="$spec" --groups="$groups" "$root" "$@"
fi
exec chroot "$root" "$@"
`

// command returns the command that runs bin (a path inside the installation) with
// args, as the test user when asUser, seeing the host directories binds (chroot only;
// the host's Dovecot sees everything). ctx may be nil.
func (e *runtimeEnv) command(ctx context.Context, binds []string, asUser bool, bin string, args ...string) *exec.Cmd {
	mk := func(name string, args ...string) *exec.Cmd {
		if ctx == nil {
			return exec.Command(name, args...)
		}
		return exec.CommandContext(ctx, name, args...)
	}
	if e.chroot == "" {
		cmd := mk(bin, args...)
		if asUser {
			groups := e.groups
			if groups == nil {
				groups = []uint32{}
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
				Uid: uint32(e.uid), Gid: uint32(e.gid), Groups: groups}}
		}
		return cmd
	}
	spec, groups := "", ""
	if asUser {
		spec = fmt.Sprintf("%d:%d", e.uid, e.gid)
		gs := []string{strconv.Itoa(e.gid)}
		for _, g := range e.groups {
			if int(g) != e.gid {
				gs = append(gs, strconv.Itoa(int(g)))
			}
		}
		groups = strings.Join(gs, ",")
	}
	full := []string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", chrootScript, "twinbox-chroot", e.chroot, spec, groups}
	full = append(full, bindList(binds)...)
	full = append(full, "--", bin)
	full = append(full, args...)
	return mk("unshare", full...)
}

// bindList returns the absolute, cleaned directories of binds that are not inside
// another one, parents first.
func bindList(binds []string) []string {
	var abs []string
	for _, b := range binds {
		if b == "" {
			continue
		}
		a, err := filepath.Abs(b)
		if err != nil {
			continue
		}
		abs = append(abs, filepath.Clean(a))
	}
	sort.Slice(abs, func(i, j int) bool { return len(abs[i]) < len(abs[j]) || len(abs[i]) == len(abs[j]) && abs[i] < abs[j] })
	var out []string
next:
	for _, a := range abs {
		for _, o := range out {
			if a == o || strings.HasPrefix(a, o+"/") {
				continue next
			}
		}
		out = append(out, a)
	}
	return out
}

// shellQuote quotes args for /bin/sh.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%+", r))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
