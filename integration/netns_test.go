package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// netHost is one "host": a network namespace with its own address, host
// name (a UTS namespace for every process started in it), mail root and
// OpenSSH sshd.
type netHost struct {
	ns, name, addr, dev string
	mail                string // the mail directory: one root per user under it
	srv                 string // its twinbox.toml for `twinbox serve`
}

// netPair makes two hosts joined by a veth pair; both are torn down when
// the test ends.
func netPair(t *testing.T, h *sshHarness) (*netHost, *netHost) {
	t.Helper()
	for _, p := range []string{"ip", "unshare"} {
		if _, err := exec.LookPath(p); err != nil {
			skipOrFail(t, "no %s (apt-get install iproute2 util-linux)", p)
		}
	}
	id := strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	a := &netHost{ns: "tbx" + id + "a", name: "mxa", addr: "10.231.0.1", dev: "tbx" + id + "a"}
	b := &netHost{ns: "tbx" + id + "b", name: "mxb", addr: "10.231.0.2", dev: "tbx" + id + "b"}
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	sh("ip", "netns", "add", a.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", a.ns).Run() })
	sh("ip", "netns", "add", b.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", b.ns).Run() })
	sh("ip", "link", "add", a.dev, "type", "veth", "peer", "name", b.dev)
	for _, x := range []*netHost{a, b} {
		sh("ip", "link", "set", x.dev, "netns", x.ns)
		sh("ip", "-n", x.ns, "addr", "add", x.addr+"/24", "dev", x.dev)
		sh("ip", "-n", x.ns, "link", "set", x.dev, "up")
		sh("ip", "-n", x.ns, "link", "set", "lo", "up")
		x.mail = filepath.Join(h.dir, x.name)
		if err := os.MkdirAll(x.mail, 0o755); err != nil {
			t.Fatal(err)
		}
		x.srv = h.config("srv-"+x.name, x.name, x.mail, "")
	}
	// One host key for both sshds; known_hosts names both addresses.
	hostPub, err := os.ReadFile(filepath.Join(h.dir, "host_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, h.known, fmt.Sprintf("[%s]:%d %s[%s]:%d %s", a.addr, h.port, hostPub, b.addr, h.port, hostPub), 0o644)
	for _, x := range []*netHost{a, b} {
		x.startSSHD(t, h)
	}
	return a, b
}

// in is the command prefix that runs a program on host x.
func (x *netHost) in() []string {
	return []string{"ip", "netns", "exec", x.ns, "unshare", "--uts", "sh", "-c", `hostname "$0" && exec "$@"`, x.name}
}

func (x *netHost) startSSHD(t *testing.T, h *sshHarness) {
	t.Helper()
	cfg := filepath.Join(h.dir, "sshd_config_"+x.name)
	log := filepath.Join(h.dir, "sshd_"+x.name+".log")
	writeFile(t, cfg, fmt.Sprintf(`ListenAddress %s:%d
HostKey %s/host_key
PidFile %s/sshd_%s.pid
AuthorizedKeysFile %s/authorized/%%u
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
AllowUsers %s
ClientAliveInterval 2
ClientAliveCountMax 2
MaxStartups 50
`, x.addr, h.port, h.dir, h.dir, x.name, h.dir, SSHUser), 0o644)
	args := append(x.in(), "/usr/sbin/sshd", "-D", "-e", "-f", cfg, "-E", log)
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("sshd %s log:\n%s", x.name, b)
		}
	})
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "Server listening") {
			return
		}
		if i >= 100 {
			b, _ := os.ReadFile(log)
			t.Fatalf("sshd on %s does not start:\n%s", x.name, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// client writes the twinbox.toml host x syncs with: its users' mail and
// the ssh command that reaches `twinbox serve` on peer.
func (x *netHost) client(h *sshHarness, peer *netHost, replicaID string) string {
	ssh := h.sshArgs() + " -o ServerAliveInterval=2 -o ServerAliveCountMax=2 -l%{login} %{host} " + bin + " --config " + peer.srv + " serve -u %u"
	return h.config("cli-"+x.name+"-"+replicaID, replicaID, x.mail, ssh)
}

// TestNetnsTwoHosts: two hosts in their own network namespaces, each with
// its own host name and mail root, sync the same user with each other in
// both directions at once, round after round; they converge. Two hosts
// configured with one replica ID are refused.
func TestNetnsTwoHosts(t *testing.T) {
	h := newSSHD(t)
	h.authorize(SSHUser, "restrict "+h.pub)
	ha, hb := netPair(t, h)
	a, b := filepath.Join(ha.mail, "bob"), filepath.Join(hb.mail, "bob")
	testmail.Deliver(t, a, "INBOX", "first on A")
	testmail.Deliver(t, b, "INBOX", "first on B")
	h.chownTree(ha.mail)
	h.chownTree(hb.mail)
	cliA, cliB := ha.client(h, hb, "mxa"), hb.client(h, ha, "mxb")
	peerOfA, peerOfB := "remote:"+SSHUser+"@"+hb.addr, "remote:"+SSHUser+"@"+ha.addr
	rounds := 3
	if longMode() {
		rounds = 15
	}
	for i := range rounds {
		m := testmail.Deliver(t, a, "INBOX", fmt.Sprintf("round %d on A", i))
		testmail.Deliver(t, b, fmt.Sprintf("Folder%d", i), fmt.Sprintf("round %d on B", i))
		testmail.SetFlags(t, a, "INBOX", m, "F")
		h.chownTree(ha.mail)
		h.chownTree(hb.mail)
		pa := startIn(t, nil, ha.in(), nil, "--config", cliA, "-v", "sync", "-u", "bob", peerOfA)
		pb := startIn(t, nil, hb.in(), nil, "--config", cliB, "-v", "sync", "-u", "bob", peerOfB)
		for _, r := range []result{pa.wait(cmdTimeout), pb.wait(cmdTimeout)} {
			if r.code != 0 && r.code != 2 {
				t.Fatalf("round %d: %s", i, r)
			}
		}
	}
	h.chownTree(ha.mail)
	h.chownTree(hb.mail)
	r := startIn(t, nil, ha.in(), nil, "--config", cliA, "sync", "-u", "bob", peerOfA).wait(cmdTimeout)
	if r.code != 0 {
		t.Fatalf("final sync: %s", r)
	}
	testmail.Converged(t, a, b)
	if n := len(testmail.UIDs(t, a, "INBOX")); n != 2+rounds {
		t.Errorf("INBOX: %d messages, want %d", n, 2+rounds)
	}
	// Host A wrongly configured with host B's replica ID.
	bad := ha.client(h, hb, "mxb")
	r = startIn(t, nil, ha.in(), nil, "--config", bad, "sync", "-u", "bob", peerOfA).wait(cmdTimeout)
	if r.code != 1 || !strings.Contains(r.stderr, "same replica_id") || !strings.Contains(r.stderr, "mxa") {
		t.Errorf("equal replica IDs on two hosts: %s", r)
	}
}

// TestNetnsLinkCut: a large first sync between two hosts is cut at random
// moments, by taking the link down (the peer vanishes without a word) or by
// killing the far `twinbox serve`; nothing is lost and the next syncs
// converge.
func TestNetnsLinkCut(t *testing.T) {
	h := newSSHD(t)
	h.authorize(SSHUser, "restrict "+h.pub)
	ha, hb := netPair(t, h)
	a, b := filepath.Join(ha.mail, "bob"), filepath.Join(hb.mail, "bob")
	rng := newRand(seed(t))
	n := 1200
	if longMode() {
		n = 5000
	}
	// A slow link (40 Mbit/s) so that a first sync takes seconds.
	for _, x := range []*netHost{ha, hb} {
		if out, err := exec.Command("ip", "netns", "exec", x.ns, "tc", "qdisc", "add", "dev", x.dev, "root", "tbf", "rate", "40mbit", "burst", "64kb", "latency", "200ms").CombinedOutput(); err != nil {
			t.Fatalf("tc: %v %s", err, out)
		}
	}
	big := strings.Repeat("0123456789abcdef", 4<<10) // 64 KiB
	for i := range n {
		box := []string{"INBOX", "Archive", "Lists/go"}[i%3]
		testmail.Deliver(t, a, box, fmt.Sprintf("message %d\n%s", i, big[:rng.IntN(len(big))]))
	}
	testmail.Deliver(t, b, "INBOX", "B's own")
	h.chownTree(ha.mail)
	h.chownTree(hb.mail)
	cli := ha.client(h, hb, "mxa")
	peer := "remote:" + SSHUser + "@" + hb.addr
	cuts := 3
	if longMode() {
		cuts = 10
	}
	var cut, finished int
	for i := 0; i < cuts; i++ {
		p := startIn(t, nil, ha.in(), nil, "--config", cli, "sync", "--lock-timeout", "60s", "-u", "bob", peer)
		time.Sleep(time.Duration(200+rng.IntN(2000)) * time.Millisecond)
		how := "link"
		if i%2 == 1 {
			how = "kill serve"
			killServe(hb.srv)
		} else {
			exec.Command("ip", "-n", ha.ns, "link", "set", ha.dev, "down").Run()
		}
		r := p.wait(cmdTimeout)
		exec.Command("ip", "-n", ha.ns, "link", "set", ha.dev, "up").Run()
		if r.code == 0 {
			finished++
		} else {
			cut++
			t.Logf("cut %d (%s): exit %d: %s", i, how, r.code, lastLine(r.stderr))
		}
		h.chownTree(ha.mail)
		h.chownTree(hb.mail)
	}
	t.Logf("%d syncs cut, %d finished before the cut", cut, finished)
	var last result
	for i := 0; i < 5; i++ {
		last = startIn(t, nil, ha.in(), nil, "--config", cli, "sync", "--lock-timeout", "60s", "-u", "bob", peer).wait(cmdTimeout)
		if last.code == 0 {
			break
		}
	}
	if last.code != 0 {
		t.Fatalf("no convergence after the cuts: %s", last)
	}
	testmail.Converged(t, a, b)
	total := 0
	for _, box := range []string{"INBOX", "Archive", "Lists/go"} {
		total += len(testmail.UIDs(t, b, box))
	}
	if total != n+1 {
		t.Errorf("B holds %d messages, want %d", total, n+1)
	}
}

// killServe kills the `twinbox serve` processes started with config srv.
func killServe(srv string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cl := string(b)
		if strings.Contains(cl, srv) && strings.Contains(cl, "\x00serve\x00") {
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
