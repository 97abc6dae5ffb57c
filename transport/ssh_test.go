package transport_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/twinbox-mail/twinbox/sshd"
	"github.com/twinbox-mail/twinbox/transport"
)

func TestParseSSHURL(t *testing.T) {
	good := map[string][2]string{
		"ssh://vmail@mx2:2222":  {"mx2:2222", "vmail"},
		"ssh://mx2":             {"mx2:22", ""},
		"ssh://root@10.0.0.1":   {"10.0.0.1:22", "root"},
		"ssh://v@[::1]:2200":    {"[::1]:2200", "v"},
		"ssh://v@[fe80::1]":     {"[fe80::1]:22", "v"},
		"ssh://v@mx2.example/":  {"mx2.example:22", "v"},
		"ssh://a%40b@mx2:22":    {"mx2:22", "a@b"},
		"ssh://vmail@MX2:65535": {"MX2:65535", "vmail"},
	}
	for in, want := range good {
		o, err := transport.ParseSSHURL(in)
		if err != nil || o.Addr != want[0] || o.Login != want[1] {
			t.Errorf("%q: %+v %v, want %v", in, o, err, want)
		}
	}
	for _, in := range []string{"", "mx2", "ssh:mx2", "ssh://", "ssh://v@", "http://mx2", "ssh://v:pw@mx2", "ssh://mx2/path",
		"ssh://mx2?x=1", "ssh://mx2#f", "ssh://mx2:0", "ssh://mx2:70000", "ssh://mx2:x", "ssh://@mx2"} {
		if o, err := transport.ParseSSHURL(in); err == nil {
			t.Errorf("%q accepted: %+v", in, o)
		}
	}
}

// server is an embedded sshd on 127.0.0.1:0 whose Serve answers each line
// with "USER:LINE" and fails on "fail".
type server struct {
	*sshd.Server
	addr string
	dir  string
	key  string // client private key file
}

func newKeyFile(t testing.TB, path string) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := gossh.NewSignerFromKey(priv)
	return s
}

func startServer(t testing.TB, extraKeys ...gossh.PublicKey) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{dir: dir, key: filepath.Join(dir, "client_key")}
	signer := newKeyFile(t, s.key)
	auth := `users="alice" ` + string(gossh.MarshalAuthorizedKey(signer.PublicKey()))
	for _, k := range extraKeys {
		auth += `users="alice" ` + string(gossh.MarshalAuthorizedKey(k))
	}
	ak := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(ak, []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := sshd.New(sshd.Config{
		HostKeyPath:        filepath.Join(dir, "host_key"),
		AuthorizedKeysPath: ak,
		Serve: func(ctx context.Context, user string, rw io.ReadWriter) error {
			sc := bufio.NewScanner(rw)
			for sc.Scan() {
				if sc.Text() == "fail" {
					return errors.New("the replica of " + user + " is broken")
				}
				fmt.Fprintf(rw, "%s:%s\n", user, sc.Text())
			}
			return sc.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Server = srv
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return s
}

func (s *server) knownHosts(t testing.TB, keys ...gossh.PublicKey) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(knownhosts.Line([]string{s.addr}, k) + "\n")
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *server) opts(kh string) transport.SSHOptions {
	return transport.SSHOptions{Addr: s.addr, Login: "vmail", User: "alice", IdentityFiles: []string{s.key}, KnownHostsFiles: []string{kh}}
}

// echo writes line and reads the answer.
func echo(t testing.TB, rw io.ReadWriter, line string) string {
	t.Helper()
	if _, err := fmt.Fprintln(rw, line); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(rw)
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return got
}

func TestSSHRoundTrip(t *testing.T) {
	s := startServer(t)
	rwc, err := transport.SSH(context.Background(), s.opts(s.knownHosts(t, s.HostKey())))
	if err != nil {
		t.Fatal(err)
	}
	if got := echo(t, rwc, "hello"); got != "alice:hello\n" {
		t.Fatalf("answer %q", got)
	}
	if err := rwc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := rwc.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// A non-zero exit status with stderr text is Close's error.
func TestSSHExitStatusError(t *testing.T) {
	s := startServer(t)
	rwc, err := transport.SSH(context.Background(), s.opts(s.knownHosts(t, s.HostKey())))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(rwc, "fail")
	io.Copy(io.Discard, rwc)
	err = rwc.Close()
	if err == nil || !strings.Contains(err.Error(), "exited with status 1") || !strings.Contains(err.Error(), "the replica of alice is broken") {
		t.Fatalf("close: %v", err)
	}
}

// A refused command fails at once, with the server's reason.
func TestSSHRefusedCommand(t *testing.T) {
	s := startServer(t)
	kh := s.knownHosts(t, s.HostKey())
	o := s.opts(kh)
	o.Command = "ls"
	if _, err := transport.SSH(context.Background(), o); err == nil || !strings.Contains(err.Error(), `refused: command "ls" not allowed`) {
		t.Fatalf("ls: %v", err)
	}
	o = s.opts(kh)
	o.User = "bob"
	if _, err := transport.SSH(context.Background(), o); err == nil || !strings.Contains(err.Error(), `user "bob" not allowed by users="alice"`) {
		t.Fatalf("bob: %v", err)
	}
	// A user name that would change the command is refused before dialing.
	for _, u := range []string{"alice; ls", "../x", "-x", "a b", ""} {
		o = s.opts(kh)
		o.User = u
		if _, err := transport.SSH(context.Background(), o); err == nil || strings.Contains(err.Error(), "refused") {
			t.Errorf("user %q: %v", u, err)
		}
	}
}

func TestSSHUnknownHostKey(t *testing.T) {
	s := startServer(t)
	kh := filepath.Join(t.TempDir(), "sub", "known_hosts") // does not exist yet
	_, err := transport.SSH(context.Background(), s.opts(kh))
	line := knownhosts.Line([]string{s.addr}, s.HostKey())
	fp := gossh.FingerprintSHA256(s.HostKey())
	if err == nil {
		t.Fatal("an unknown host key was accepted")
	}
	for _, want := range []string{"unknown host key", s.addr, "ssh-ed25519", fp, "\n" + line, kh} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(kh); err == nil {
		t.Fatal("known_hosts written without AcceptNewHostKey")
	}

	// accept-new: the line is added and the connection goes on; later
	// connections find the key without the option.
	o := s.opts(kh)
	o.AcceptNewHostKey = true
	rwc, err := transport.SSH(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := echo(t, rwc, "x"); got != "alice:x\n" {
		t.Fatalf("answer %q", got)
	}
	rwc.Close()
	b, _ := os.ReadFile(kh)
	if string(b) != line+"\n" {
		t.Fatalf("known_hosts %q, want %q", b, line+"\n")
	}
	fi, _ := os.Stat(kh)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %04o", fi.Mode().Perm())
	}
	rwc, err = transport.SSH(context.Background(), s.opts(kh))
	if err != nil {
		t.Fatalf("second connection: %v", err)
	}
	rwc.Close()
}

func TestSSHChangedHostKey(t *testing.T) {
	s := startServer(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := gossh.NewPublicKey(other.Public())
	kh := s.knownHosts(t, otherPub)
	before, _ := os.ReadFile(kh)
	for _, accept := range []bool{false, true} {
		o := s.opts(kh)
		o.AcceptNewHostKey = accept
		_, err := transport.SSH(context.Background(), o)
		if err == nil {
			t.Fatalf("accept=%v: a changed host key was accepted", accept)
		}
		for _, want := range []string{"HOST KEY CHANGED", gossh.FingerprintSHA256(s.HostKey()), gossh.FingerprintSHA256(otherPub), kh + ":1"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("accept=%v: error %q does not mention %q", accept, err, want)
			}
		}
	}
	if after, _ := os.ReadFile(kh); string(after) != string(before) {
		t.Fatal("known_hosts changed")
	}
}

// The client asks for the key types known_hosts has: a host known by an
// RSA key only cannot slip in with its (unknown) ed25519 key; known by
// both, the connection works.
func TestSSHHostKeyAlgorithms(t *testing.T) {
	s := startServer(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := gossh.NewPublicKey(&rk.PublicKey)
	_, err = transport.SSH(context.Background(), s.opts(s.knownHosts(t, rsaPub)))
	if err == nil || !strings.Contains(err.Error(), "none of the host key types known for it") || !strings.Contains(err.Error(), "rsa-sha2-512") {
		t.Fatalf("RSA-only known_hosts: %v", err)
	}
	rwc, err := transport.SSH(context.Background(), s.opts(s.knownHosts(t, rsaPub, s.HostKey())))
	if err != nil {
		t.Fatalf("known by both: %v", err)
	}
	rwc.Close()
}

// Defaults: ~/.ssh/id_ed25519 and ~/.ssh/known_hosts, the login of the
// current user; and an agent holding the key.
func TestSSHDefaultsAndAgent(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	signer := newKeyFile(t, filepath.Join(home, ".ssh", "id_ed25519"))
	s := startServer(t, signer.PublicKey())
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(knownhosts.Line([]string{s.addr}, s.HostKey())+"\n"), 0o600)
	rwc, err := transport.SSH(context.Background(), transport.SSHOptions{Addr: s.addr, User: "alice"})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if got := echo(t, rwc, "d"); got != "alice:d\n" {
		t.Fatalf("answer %q", got)
	}
	rwc.Close()

	// An agent with the key, no identity file.
	os.Remove(filepath.Join(home, ".ssh", "id_ed25519"))
	if _, err := transport.SSH(context.Background(), transport.SSHOptions{Addr: s.addr, User: "alice"}); err == nil || !strings.Contains(err.Error(), "no usable SSH key") {
		t.Fatalf("no key: %v", err)
	}
	keyring := agent.NewKeyring()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyring.Add(agent.AddedKey{PrivateKey: priv})
	agentPub, _ := gossh.NewPublicKey(priv.Public())
	s2 := startServer(t, agentPub)
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(knownhosts.Line([]string{s2.addr}, s2.HostKey())+"\n"), 0o600)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(keyring, c); c.Close() }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	rwc, err = transport.SSH(context.Background(), transport.SSHOptions{Addr: s2.addr, User: "alice", Agent: true})
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	if got := echo(t, rwc, "a"); got != "alice:a\n" {
		t.Fatalf("answer %q", got)
	}
	rwc.Close()
}

func TestSSHEncryptedIdentity(t *testing.T) {
	s := startServer(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "enc")
	os.WriteFile(p, pem.EncodeToMemory(block), 0o600)
	o := s.opts(s.knownHosts(t, s.HostKey()))
	o.IdentityFiles = []string{p}
	if _, err := transport.SSH(context.Background(), o); err == nil || !strings.Contains(err.Error(), "is encrypted") {
		t.Fatalf("encrypted key: %v", err)
	}
	o.IdentityFiles = []string{filepath.Join(t.TempDir(), "missing")}
	if _, err := transport.SSH(context.Background(), o); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing key: %v", err)
	}
}

// Cancelling the context ends a session in progress.
func TestSSHCancel(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	rwc, err := transport.SSH(ctx, s.opts(s.knownHosts(t, s.HostKey())))
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := rwc.Read(make([]byte, 1))
		read <- err
	}()
	cancel()
	if err := <-read; err == nil {
		t.Fatal("read succeeded after cancel")
	}
	rwc.Close()
}
