package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// testCA makes a CA and a server certificate for names, signed by it, and
// writes them (PEM) under dir/prefix*. It returns the CA, cert and key files.
func testCA(t *testing.T, dir, prefix string, names ...string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: prefix + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, prefix+"ca.pem"), filepath.Join(dir, prefix+"cert.pem"), filepath.Join(dir, prefix+"key.pem")
	writeFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), 0o644)
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), 0o600)
	return
}

func secretFile(t *testing.T, path string) {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	writeFile(t, path, base64.StdEncoding.EncodeToString(b)+"\n", 0o600)
}

// TestTCPListen: `twinbox listen` serves tcp: (shared secret, encrypted
// records) and tcps: (TLS 1.3 with the server certificate checked), each
// session a child `serve` as the mail's owner; a wrong secret, a user the
// secret does not grant, an untrusted certificate and a wrong server name
// are refused, and the listener logs each refusal.
func TestTCPListen(t *testing.T) {
	h := newHarness(t)
	mailA, mailB, a, b := h.twoHosts()
	ca, cert, key := testCA(t, h.dir, "srv-", "localhost")
	secret := filepath.Join(h.dir, "mx1.secret")
	secretFile(t, secret)
	pTCP, pTCPS := freePort(t), freePort(t)
	srv := filepath.Join(h.dir, "srv.toml")
	writeFile(t, srv, fmt.Sprintf(`version = 1
replica_id = "mx2"
[users]
path = %q
[listen]
tcp = "127.0.0.1:%d"
tcps = "127.0.0.1:%d"
cert_file = %q
key_file = %q
[[listen.secret]]
name = "mx1"
file = %q
users = ["bob", "dave"]
`, mailB+"/%u", pTCP, pTCPS, cert, key, secret), 0o644)
	lp := start(t, "--config", srv, "listen")
	for _, port := range []int{pTCP, pTCPS} {
		for i := 0; ; i++ {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			if i >= 100 || !lp.running() {
				t.Fatalf("twinbox listen does not listen on %d: %v\n%s", port, err, lp.wait(time.Second))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	logOf := func() string { b, _ := os.ReadFile(lp.err.Name()); return string(b) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("twinbox listen log:\n%s", logOf())
		}
	})
	client := func(name, secretPath, caFile string) string {
		p := filepath.Join(h.dir, name+".toml")
		s := fmt.Sprintf("version = 1\nreplica_id = \"mx1\"\n[users]\npath = %q\n[client]\nsecret_name = \"mx1\"\nsecret_file = %q\n", mailA+"/%u", secretPath)
		if caFile != "" {
			s += fmt.Sprintf("ca_file = %q\n", caFile)
		}
		writeFile(t, p, s, 0o644)
		return p
	}
	cli := client("cli", secret, ca)
	tcpPeer := fmt.Sprintf("tcp:127.0.0.1:%d", pTCP)
	tcpsPeer := fmt.Sprintf("tcps:localhost:%d", pTCPS)

	runWant(t, 0, "--config", cli, "sync", "-u", "bob", tcpPeer)
	testmail.Converged(t, a, b)
	if w := h.notOwned(b); len(w) > 0 {
		t.Errorf("files written through twinbox listen not owned by %s: %v", SSHUser, w)
	}
	requireIdleArgs(t, a, b, "--config", cli, "sync", "-u", "bob", tcpPeer)
	testmail.Deliver(t, b, "INBOX", "new on B")
	testmail.Deliver(t, a, "Sent", "new on A")
	h.chownTree(mailB)
	runWant(t, 0, "--config", cli, "sync", "-u", "bob", tcpsPeer)
	testmail.Converged(t, a, b)
	requireIdleArgs(t, a, b, "--config", cli, "sync", "-u", "bob", tcpsPeer)
	runWant(t, 0, "--config", cli, "check", "-u", "bob", tcpsPeer)

	// Refusals.
	wrong := filepath.Join(h.dir, "wrong.secret")
	secretFile(t, wrong)
	testmail.Deliver(t, filepath.Join(mailA, "carol"), "INBOX", "c")
	testmail.Deliver(t, filepath.Join(mailA, "dave"), "INBOX", "d")
	cases := []struct {
		name, config, user, peer, want string
	}{
		{"wrong secret (tcp)", client("wrong", wrong, ca), "bob", tcpPeer, "refused"},
		{"wrong secret (tcps)", client("wrong", wrong, ca), "bob", tcpsPeer, "refused"},
		{"user not granted", cli, "carol", tcpPeer, "refused"},
		{"user unknown there", cli, "dave", tcpPeer, "unknown user"},
		{"untrusted certificate", client("noca", secret, ""), "bob", tcpsPeer, "certificate"},
		{"wrong server name", cli, "bob", fmt.Sprintf("tcps:127.0.0.1:%d", pTCPS), "certificate"},
		{"tcps client at the tcp port", cli, "bob", fmt.Sprintf("tcps:localhost:%d", pTCP), ""},
		{"tcp client at the tcps port", cli, "bob", fmt.Sprintf("tcp:127.0.0.1:%d", pTCPS), ""},
	}
	for _, c := range cases {
		r := run(t, "--config", c.config, "sync", "-u", c.user, c.peer)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: want exit 1 with %q:\n%s", c.name, c.want, r)
		}
	}
	log := logOf()
	for _, want := range []string{
		"listener=tcp remote=127.0.0.1", // every refusal names the peer's address
		`listener=tcp remote=127.0.0.1:` + "", "user=bob secret=mx1 reason=\"authentication failed: wrong key",
		`does not permit user \"carol\"`, "user dave: unknown user", "tls: bad certificate",
		"the client speaks TLS (tcps:) to a tcp: listener", "the client speaks tcp: to a tcps: listener",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the listener's log lacks %q", want)
		}
	}
	if n := strings.Count(log, "wrong key"); n != 2 {
		t.Errorf("the listener logged %d wrong keys, want 2 (tcp and tcps)", n)
	}
	if !lp.running() {
		t.Fatalf("twinbox listen died: %s", lp.wait(time.Second))
	}
	testmail.Converged(t, a, b)
}
