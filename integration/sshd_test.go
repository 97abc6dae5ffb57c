package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// embeddedSSHD is `twinbox sshd` running on a loopback port.
type embeddedSSHD struct {
	p     *proc
	port  int
	known string // known_hosts with its host key
	log   func() string
}

func startEmbeddedSSHD(t *testing.T, h *sshHarness, srvConfig, authorized string) *embeddedSSHD {
	t.Helper()
	port := freePort(t)
	hostKey := filepath.Join(h.dir, "twinbox_host_key")
	ak := filepath.Join(h.dir, "twinbox_authorized_keys")
	writeFile(t, ak, authorized, 0o644)
	p := start(t, "--config", srvConfig, "sshd", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--host-key", hostKey, "--authorized-keys", ak, "--idle-timeout", "1m")
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i >= 100 || !p.running() {
			t.Fatalf("twinbox sshd does not listen: %v\n%s", err, p.wait(time.Second))
		}
		time.Sleep(100 * time.Millisecond)
	}
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(hostKey)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("host key %v, mode %v; want 0600", err, fi.Mode())
	}
	known := filepath.Join(h.dir, "twinbox_known_hosts")
	writeFile(t, known, fmt.Sprintf("[127.0.0.1]:%d %s", port, pub), 0o644)
	e := &embeddedSSHD{p: p, port: port, known: known}
	e.log = func() string {
		b, _ := os.ReadFile(p.err.Name())
		return string(b)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("twinbox sshd log:\n%s", e.log())
		}
	})
	return e
}

// TestEmbeddedSSHD: `twinbox sshd` serves syncs over ssh:// (the built-in
// client, host key checked) and to OpenSSH's client (remote:), each session
// as a child `serve` running as the mail's owner; keys limited to other
// users, unknown keys, unknown host keys, other commands and forwarding
// are refused, and the server logs every refusal.
func TestEmbeddedSSHD(t *testing.T) {
	h := newSSHD(t) // for the keys, the directory and the SSH user; its sshd is not used
	mailA, mailB, a, b := h.twoHosts()
	srv := h.config("srvB", "mx2", mailB, "")
	aliceKey := filepath.Join(h.dir, "id_alice")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", aliceKey).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	alicePub, _ := os.ReadFile(aliceKey + ".pub")
	e := startEmbeddedSSHD(t, h, srv, fmt.Sprintf("from=\"127.0.0.0/8\",users=\"bob,carol\" %s\nusers=\"alice\" %s", h.pub, alicePub))
	url := fmt.Sprintf("ssh://%s@127.0.0.1:%d", SSHUser, e.port)
	cli := h.config("cliA", "mx1", mailA, "")
	sshFlags := []string{"--ssh-identity", h.key, "--ssh-known-hosts", e.known}

	r := runWant(t, 0, append([]string{"--config", cli, "sync", "-u", "bob", url}, sshFlags...)...)
	if !strings.Contains(r.stdout, "sync of") {
		t.Errorf("no summary:\n%s", r)
	}
	testmail.Converged(t, a, b)
	if w := h.notOwned(b); len(w) > 0 {
		t.Errorf("files written through twinbox sshd not owned by %s: %v", SSHUser, w)
	}
	requireIdleArgs(t, a, b, append([]string{"--config", cli, "sync", "-u", "bob", url}, sshFlags...)...)
	runWant(t, 0, append([]string{"--config", cli, "check", "-u", "bob", url}, sshFlags...)...)

	// OpenSSH's client against the embedded server (remote: with an ssh
	// command that trusts its host key).
	sshCmd := fmt.Sprintf("ssh -F /dev/null -i %s -p %d -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -T -l%%{login} %%{host} twinbox serve -u %%u", h.key, e.port, e.known)
	cliO := h.config("cliO", "mx1", mailA, sshCmd)
	testmail.Deliver(t, b, "INBOX", "new on B")
	h.chownTree(mailB)
	runWant(t, 0, "--config", cliO, "sync", "-u", "bob", "remote:"+SSHUser+"@127.0.0.1")
	testmail.Converged(t, a, b)

	// Refusals.
	must := func(name string, r result, out, logged string) {
		t.Helper()
		if r.code == 0 || !strings.Contains(r.stderr+r.stdout, out) {
			t.Errorf("%s: want a refusal with %q:\n%s", name, out, r)
		}
		if logged != "" && !strings.Contains(e.log(), logged) {
			t.Errorf("%s: the server did not log %q", name, logged)
		}
	}
	// alice's key may not sync bob.
	aliceFlags := []string{"--ssh-identity", aliceKey, "--ssh-known-hosts", e.known}
	must("alice's key for bob", run(t, append([]string{"--config", cli, "sync", "-u", "bob", url}, aliceFlags...)...), "", "")
	// An unknown key.
	otherKey := filepath.Join(h.dir, "id_other")
	exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", otherKey).Run()
	must("unknown key", run(t, append([]string{"--config", cli, "sync", "-u", "bob", url}, "--ssh-identity", otherKey, "--ssh-known-hosts", e.known)...), "unable to authenticate", "")
	// An unknown host key: the client refuses and says which line to add.
	emptyKnown := filepath.Join(h.dir, "empty_known_hosts")
	writeFile(t, emptyKnown, "", 0o644)
	must("unknown host key", run(t, append([]string{"--config", cli, "sync", "-u", "bob", url}, "--ssh-identity", h.key, "--ssh-known-hosts", emptyKnown)...), "known_hosts", "")
	// A user the server's user source does not know.
	testmail.Deliver(t, filepath.Join(mailA, "carol"), "INBOX", "c")
	must("unknown user", run(t, append([]string{"--config", cli, "sync", "-u", "carol", url}, sshFlags...)...), "unknown user", "")
	// Other commands and forwarding through OpenSSH's client.
	ssh := func(args ...string) (string, int) {
		all := append([]string{"-F", "/dev/null", "-i", h.key, "-p", strconv.Itoa(e.port), "-o", "UserKnownHostsFile=" + e.known,
			"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes", "-T"}, args...)
		out, err := exec.Command("ssh", all...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return string(out), code
	}
	for _, c := range [][]string{{"ls", "/"}, {"twinbox serve -u bob; id"}, {"twinbox serve --root /"}, {"twinbox serve -u ../bob"}} {
		if out, code := ssh(append([]string{SSHUser + "@127.0.0.1"}, c...)...); code == 0 {
			t.Errorf("command %q was allowed: %s", c, out)
		}
	}
	if out, code := ssh(SSHUser+"@127.0.0.1", "-W", "127.0.0.1:"+strconv.Itoa(e.port)); code == 0 || strings.Contains(out, "SSH-2.0") {
		t.Errorf("a direct-tcpip channel was allowed: %s", out)
	}
	if out, code := ssh("-N", "-R", "127.0.0.1:0:127.0.0.1:1", SSHUser+"@127.0.0.1"); code == 0 {
		t.Errorf("remote forwarding was allowed: %s", out)
	}
	for _, want := range []string{
		`user \"bob\" not allowed by users=\"alice\"`,
		"key not in the authorized keys file",
		`command \"ls /\" not allowed`,
		`command \"twinbox serve -u bob; id\" not allowed`,
		`command \"twinbox serve --root /\" not allowed`,
		`user name \"../bob\"`,
		"port forwarding (direct-tcpip) not allowed",
		"remote port forwarding (tcpip-forward) not allowed",
		"user carol: unknown user",
	} {
		if !strings.Contains(e.log(), want) {
			t.Errorf("the server's log lacks %q", want)
		}
	}
	if !e.p.running() {
		t.Fatalf("twinbox sshd died: %s", e.p.wait(time.Second))
	}
	testmail.Converged(t, a, b)
}
