package integration

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// SSHUser is the unprivileged login with a shell that the OpenSSH tests
// log in as (the "vmail" of a real install); scripts/test-deps.sh makes it.
const SSHUser = "twinboxvmail"

// requireDeps fails instead of skipping when CI asks for every dependency.
func requireDeps() bool { return os.Getenv(dovecot.RequireEnv) == "1" }

func skipOrFail(t *testing.T, format string, a ...any) {
	t.Helper()
	if requireDeps() {
		t.Fatalf(format+" (and %s=1)", append(a, dovecot.RequireEnv)...)
	}
	t.Skipf(format, a...)
}

// sshHarness is a real OpenSSH sshd on a loopback port, with its own
// configuration, host key and authorized_keys files, and a client key.
type sshHarness struct {
	t        *testing.T
	dir      string // 0755, readable by SSHUser
	port     int
	key      string // client private key
	pub      string // its public key line
	known    string // known_hosts with the server's key
	vmailUID int
	vmailGID int
	log      string
}

// newHarness makes the test directory (readable by SSHUser), keys and
// known_hosts, without starting sshd.
func newHarness(t *testing.T) *sshHarness {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "the host tests need root")
	}
	for _, p := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			skipOrFail(t, "no %s (apt-get install openssh-client)", p)
		}
	}
	u, err := user.Lookup(SSHUser)
	if err != nil {
		skipOrFail(t, "no user %s (run scripts/test-deps.sh)", SSHUser)
	}
	h := &sshHarness{t: t}
	h.vmailUID, _ = strconv.Atoi(u.Uid)
	h.vmailGID, _ = strconv.Atoi(u.Gid)
	h.dir, err = os.MkdirTemp("", "twinbox-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(h.dir) })
	if err := os.Chmod(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

// newSSHD starts sshd; it is stopped when the test ends.
func newSSHD(t *testing.T) *sshHarness {
	t.Helper()
	if _, err := exec.LookPath("/usr/sbin/sshd"); err != nil {
		skipOrFail(t, "no sshd (apt-get install openssh-server)")
	}
	h := newHarness(t)
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	keygen := func(path string) string {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", filepath.Base(path), "-f", path).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		pub, err := os.ReadFile(path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(pub))
	}
	hostPub := keygen(filepath.Join(h.dir, "host_key"))
	h.key = filepath.Join(h.dir, "id_client")
	h.pub = keygen(h.key)
	h.port = freePort(t)
	h.known = filepath.Join(h.dir, "known_hosts")
	writeFile(t, h.known, fmt.Sprintf("[127.0.0.1]:%d %s\n", h.port, hostPub), 0o644)
	os.MkdirAll(filepath.Join(h.dir, "authorized"), 0o755)
	h.log = filepath.Join(h.dir, "sshd.log")
	cfg := filepath.Join(h.dir, "sshd_config")
	writeFile(t, cfg, fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s/host_key
PidFile %s/sshd.pid
AuthorizedKeysFile %s/authorized/%%u
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PermitRootLogin forced-commands-only
AllowUsers root %s
LogLevel VERBOSE
MaxStartups 50
`, h.port, h.dir, h.dir, h.dir, SSHUser), 0o644)
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfg, "-E", h.log)
	if out, err := exec.Command("/usr/sbin/sshd", "-t", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t: %v\n%s", err, out)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(h.log); err == nil {
				t.Logf("sshd log:\n%s", b)
			}
		}
	})
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", h.port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i >= 100 {
			t.Fatalf("sshd does not listen on %d: %v", h.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return h
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// authorize writes login's authorized_keys lines.
func (h *sshHarness) authorize(login string, lines ...string) {
	writeFile(h.t, filepath.Join(h.dir, "authorized", login), strings.Join(lines, "\n")+"\n", 0o644)
}

// sshArgs is the ssh client command line (without the remote command).
func (h *sshHarness) sshArgs() string {
	return fmt.Sprintf("ssh -F /dev/null -i %s -p %d -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=20 -T",
		h.key, h.port, h.known)
}

// ssh runs the OpenSSH client with args.
func (h *sshHarness) ssh(stdin string, args ...string) (string, int) {
	all := append(strings.Fields(h.sshArgs()), args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, all[0], all[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	return string(out), code
}

// config writes a twinbox.toml for one host.
func (h *sshHarness) config(name, replicaID, mailDir, sshCommand string) string {
	p := filepath.Join(h.dir, name+".toml")
	s := fmt.Sprintf("version = 1\nreplica_id = %q\n[users]\npath = %q\n", replicaID, mailDir+"/%u")
	if sshCommand != "" {
		s += fmt.Sprintf("[ssh]\ncommand = %q\nprefix_command = %q\n", sshCommand, sshCommand)
	}
	writeFile(h.t, p, s, 0o644)
	return p
}

// chownTree gives a tree to the SSH user.
func (h *sshHarness) chownTree(root string) {
	h.t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, h.vmailUID, h.vmailGID)
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// ownedBy lists the files under root not owned by the SSH user.
func (h *sshHarness) notOwned(root string) []string {
	var wrong []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := os.Lstat(p); err == nil {
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != h.vmailUID {
				wrong = append(wrong, p)
			}
		}
		return nil
	})
	return wrong
}

// twoHosts makes the mail directories of two "hosts" with user bob on
// each, some mail in both.
func (h *sshHarness) twoHosts() (mailA, mailB, a, b string) {
	mailA, mailB = filepath.Join(h.dir, "hostA"), filepath.Join(h.dir, "hostB")
	a, b = filepath.Join(mailA, "bob"), filepath.Join(mailB, "bob")
	testmail.Deliver(h.t, a, "INBOX", "from A")
	testmail.Deliver(h.t, a, "Work", "work on A")
	testmail.Deliver(h.t, b, "INBOX", "from B")
	for _, d := range []string{mailA, mailB} {
		os.Chmod(d, 0o755)
	}
	h.chownTree(mailB)
	return
}

// TestOpenSSHRemote: `sync -u bob remote:vmail@host` through the system's
// OpenSSH client and a real sshd, logging in as the unprivileged mail user
// whose shell runs `twinbox serve -u bob`.
func TestOpenSSHRemote(t *testing.T) {
	h := newSSHD(t)
	h.authorize(SSHUser, "restrict "+h.pub)
	mailA, mailB, a, b := h.twoHosts()
	srv := h.config("srvB", "mx2", mailB, "")
	cli := h.config("cliA", "mx1", mailA, h.sshArgs()+" -l%{login} %{host} "+bin+" --config "+srv+" -v serve -u %u")
	peer := fmt.Sprintf("remote:%s@127.0.0.1", SSHUser)
	r := runWant(t, 0, "--config", cli, "sync", "-u", "bob", peer)
	if !strings.Contains(r.stdout, "sync of") {
		t.Errorf("no summary:\n%s", r)
	}
	if !strings.Contains(r.stderr, "serving") || !strings.Contains(r.stderr, "uid="+strconv.Itoa(h.vmailUID)) {
		t.Errorf("the far end did not log serving bob as uid %d:\n%s", h.vmailUID, r.stderr)
	}
	testmail.Converged(t, a, b)
	if w := h.notOwned(b); len(w) > 0 {
		t.Errorf("files on the served side not owned by %s: %v", SSHUser, w)
	}
	runWant(t, 0, "--config", cli, "check", "-u", "bob", peer)
	// Idle: the second sync changes nothing.
	requireIdleArgs(t, a, b, "--config", cli, "sync", "-u", "bob", peer)
	// The peer from the configuration.
	cli2 := filepath.Join(h.dir, "cliA2.toml")
	b2, _ := os.ReadFile(cli)
	writeFile(t, cli2, strings.Replace(string(b2), "replica_id", "peer = \""+peer+"\"\nreplica_id", 1), 0o644)
	testmail.Deliver(t, b, "INBOX", "later from B")
	h.chownTree(mailB)
	runWant(t, 0, "--config", cli2, "sync", "-u", "bob")
	testmail.Converged(t, a, b)
	// A user the far side does not know is refused there, by name.
	testmail.Deliver(t, filepath.Join(mailA, "eve"), "INBOX", "x")
	r = runWant(t, 1, "--config", cli, "sync", "-u", "eve", peer)
	if !strings.Contains(r.stderr, "eve") || !strings.Contains(r.stderr, "unknown user") {
		t.Errorf("unknown user on the far side:\n%s", r)
	}
}

// requireIdleArgs runs a sync that must change nothing in either root.
func requireIdleArgs(t *testing.T, a, b string, args ...string) {
	t.Helper()
	sa, sb := testmail.Snapshot(a), testmail.Snapshot(b)
	r := runWant(t, 0, append(args, "--json")...)
	if !strings.Contains(r.stdout, `"changed": false`) && strings.Contains(r.stdout, `"changed": true`) {
		t.Errorf("idle sync reports changes:\n%s", r)
	}
	if testmail.Snapshot(a) != sa || testmail.Snapshot(b) != sb {
		t.Errorf("idle sync changed files:\nA: %s\nB: %s", diffLines(sa, testmail.Snapshot(a)), diffLines(sb, testmail.Snapshot(b)))
	}
}

// TestOpenSSHWrapper: root logs in with a key whose authorized_keys line is
// `restrict,command="twinbox wrapper"`; remoteprefix: sends the user first,
// remote: names it in the command; the wrapper drops root for the mail's
// owner; everything else is refused.
func TestOpenSSHWrapper(t *testing.T) {
	h := newSSHD(t)
	mailA, mailB, a, b := h.twoHosts()
	srv := h.config("srvB", "mx2", mailB, "")
	// A second key, limited to alice.
	aliceKey := filepath.Join(h.dir, "id_alice")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", aliceKey).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	alicePub, _ := os.ReadFile(aliceKey + ".pub")
	h.authorize("root",
		fmt.Sprintf(`restrict,command="%s --config %s -v wrapper" %s`, bin, srv, h.pub),
		fmt.Sprintf(`restrict,command="%s --config %s wrapper --allow alice" %s`, bin, srv, strings.TrimSpace(string(alicePub))))
	cli := h.config("cliA", "mx1", mailA, h.sshArgs()+" -l%{login} %{host} twinbox serve --user-prefix")
	peer := "remoteprefix:root@127.0.0.1"
	r := runWant(t, 0, "--config", cli, "sync", "-u", "bob", peer)
	if !strings.Contains(r.stderr, "uid="+strconv.Itoa(h.vmailUID)) {
		t.Errorf("the wrapper did not log serving as uid %d:\n%s", h.vmailUID, r.stderr)
	}
	testmail.Converged(t, a, b)
	if w := h.notOwned(b); len(w) > 0 {
		t.Errorf("files written by the wrapper not owned by %s: %v", SSHUser, w)
	}
	// remote: through the same forced command (the user in SSH_ORIGINAL_COMMAND).
	cliR := h.config("cliR", "mx1", mailA, h.sshArgs()+" -l%{login} %{host} twinbox serve -u %u")
	testmail.Deliver(t, a, "INBOX", "second from A")
	runWant(t, 0, "--config", cliR, "sync", "-u", "bob", "remote:root@127.0.0.1")
	testmail.Converged(t, a, b)
	requireIdleArgs(t, a, b, "--config", cli, "sync", "-u", "bob", peer)

	// Refusals.
	refused := func(name, stdin string, want string, args ...string) {
		t.Helper()
		out, code := h.ssh(stdin, args...)
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("%s: exit %d, output %q; want a refusal with %q", name, code, out, want)
		}
	}
	host := "root@127.0.0.1"
	refused("another command", "", "refused command", host, "ls", "/")
	refused("a shell command after serve", "", "refused command", host, "twinbox serve -u bob; id")
	refused("serve --root", "", "refused command", host, "twinbox serve --root /")
	refused("traversal user", "", "refused", host, "twinbox serve -u ../bob")
	refused("slash user", "", "refused", host, "twinbox serve -u a/b")
	refused("option user", "", "refused", host, "twinbox serve -u -x")
	refused("long user", "", "refused", host, "twinbox serve -u "+strings.Repeat("a", 300))
	refused("shell (no command), nothing on stdin", "", "stream ended before the user name line", host)
	refused("prefix line with a bad user", "../etc\n", "refused", host)
	refused("unknown user", "", "unknown user", host, "twinbox serve -u nosuchuser")
	// Port forwarding: restrict forbids it.
	out, code := h.ssh("", "-W", "127.0.0.1:"+strconv.Itoa(h.port), host)
	if code == 0 || strings.Contains(out, "SSH-2.0") {
		t.Errorf("a direct-tcpip channel (local forwarding) was allowed: %s", out)
	}
	out, code = h.ssh("", "-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:"+strconv.Itoa(h.port), host)
	if code == 0 {
		t.Errorf("remote port forwarding was allowed: %s", out)
	}
	// The key limited to alice cannot sync bob.
	cliAlice := h.config("cliAlice", "mx1", mailA, strings.Replace(h.sshArgs(), h.key, aliceKey, 1)+" -l%{login} %{host} twinbox serve -u %u")
	r = runWant(t, 1, "--config", cliAlice, "sync", "-u", "bob", "remote:root@127.0.0.1")
	if !strings.Contains(r.stderr, "not allowed") {
		t.Errorf("alice's key syncing bob:\n%s", r)
	}
	// An unknown key is refused by sshd.
	otherKey := filepath.Join(h.dir, "id_other")
	exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", otherKey).Run()
	cliOther := h.config("cliOther", "mx1", mailA, strings.Replace(h.sshArgs(), h.key, otherKey, 1)+" -l%{login} %{host} twinbox serve -u %u")
	r = runWant(t, 1, "--config", cliOther, "sync", "-u", "bob", "remote:root@127.0.0.1")
	if !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("unknown key:\n%s", r)
	}
	testmail.Converged(t, a, b)
}

// TestOpenSSHBothDirectionsAtOnce: each host syncs the same user with the
// other at the same moment, over and over. The locks are taken in replica-ID
// order on both ends, so the syncs serialise: none fails, none waits for a
// lock timeout, and the replicas converge.
func TestOpenSSHBothDirectionsAtOnce(t *testing.T) {
	h := newSSHD(t)
	h.authorize(SSHUser, "restrict "+h.pub)
	mailA, mailB, a, b := h.twoHosts()
	h.chownTree(mailA)
	srvA := h.config("srvA", "mx1", mailA, "")
	srvB := h.config("srvB", "mx2", mailB, "")
	cliA := h.config("cliA", "mx1", mailA, h.sshArgs()+" -l%{login} %{host} "+bin+" --config "+srvB+" serve --lock-timeout 20s -u %u")
	cliB := h.config("cliB", "mx2", mailB, h.sshArgs()+" -l%{login} %{host} "+bin+" --config "+srvA+" serve --lock-timeout 20s -u %u")
	peer := fmt.Sprintf("remote:%s@127.0.0.1", SSHUser)
	rounds := 4
	if longMode() {
		rounds = 20
	}
	for i := range rounds {
		testmail.Deliver(t, a, "INBOX", fmt.Sprintf("round %d on A", i))
		testmail.Deliver(t, b, "INBOX", fmt.Sprintf("round %d on B", i))
		h.chownTree(mailA)
		h.chownTree(mailB)
		// Each client waits a moment between its first and its second
		// lock: without a common order both would hold one and wait
		// for the other until the lock timeout.
		pause := []string{"TWINBOX_TEST_PAUSE_BETWEEN_LOCKS=500ms"}
		pa := startEnv(t, pause, "--config", cliA, "sync", "--lock-timeout", "20s", "-u", "bob", peer)
		pb := startEnv(t, pause, "--config", cliB, "sync", "--lock-timeout", "20s", "-u", "bob", peer)
		ra, rb := pa.wait(cmdTimeout), pb.wait(cmdTimeout)
		for _, r := range []result{ra, rb} {
			if r.code != 0 && r.code != 2 {
				t.Fatalf("round %d: %s", i, r)
			}
			if strings.Contains(r.stderr, "lock") {
				t.Errorf("round %d waited for a lock until it gave up:\n%s", i, r)
			}
		}
	}
	h.chownTree(mailA)
	h.chownTree(mailB)
	runWant(t, 0, "--config", cliA, "sync", "-u", "bob", peer)
	testmail.Converged(t, a, b)
	if n := len(testmail.UIDs(t, a, "INBOX")); n != 2+2*rounds {
		t.Errorf("INBOX has %d messages, want %d", n, 2+2*rounds)
	}
}
