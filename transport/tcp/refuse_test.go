package tcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// rawC1 is a client hello with zero nonce and share.
func rawC1(mode byte, name, user string) []byte {
	b := append([]byte(magic), hsVersion, mode, byte(len(name)))
	b = append(b, name...)
	b = append(b, byte(len(user)))
	b = append(b, user...)
	return append(b, make([]byte, nonceLen+shareLen)...)
}

// hsLen is the length of the client's handshake bytes (C1 and C2).
func hsLen(name, user string) int { return len(rawC1(modeTCP, name, user)) + proofLen }

// exchange sends b to addr, half-closes, and returns what the server sent
// until it closed the connection.
func exchange(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatal(err)
	}
	return out
}

// answer parses what a server sent a client: S1, and S2 after an S1 that
// was not a refusal. It returns whether S1 went on, and the refusal.
func answer(t *testing.T, b []byte) (s1ok bool, refusal string) {
	t.Helper()
	h := &hsReader{r: bytes.NewReader(b), left: maxHandshake}
	m, err := h.read(len(magic)+2, "S1")
	if err != nil {
		t.Fatalf("server answer %q: %v", b, err)
	}
	if string(m[:len(magic)]) != magic {
		t.Fatalf("server answer %q", b)
	}
	if m[len(magic)+1] == statusRefuse {
		msg, err := h.refusalMsg()
		if err != nil {
			t.Fatal(err)
		}
		return false, msg
	}
	if _, err := h.read(nonceLen+shareLen, "S1"); err != nil {
		t.Fatal(err)
	}
	st, err := h.byte("S2")
	if err != nil {
		t.Fatalf("no S2 in %q: %v", b, err)
	}
	if st != statusRefuse {
		t.Fatalf("S2 status %d, want a refusal", st)
	}
	msg, err := h.refusalMsg()
	if err != nil {
		t.Fatal(err)
	}
	return true, msg
}

func carolServer(t *testing.T, l *Listener) (*testServer, string, string) {
	t.Helper()
	d := t.TempDir()
	local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
	fillPair(t, local, remote)
	if l.Secrets == nil {
		l.Secrets = []Secret{{Name: "mx1", Key: keyA, Users: []string{"carol"}}, {Name: "alice-only", Key: keyB, Users: []string{"alice"}}}
	}
	return startServer(t, l, roots{"carol": remote, "alice": remote}), local, remote
}

func TestRefusedSecrets(t *testing.T) {
	ctx := context.Background()
	s, _, remote := carolServer(t, &Listener{})
	before := testmail.Snapshot(remote)

	_, wrongKey := Dial(ctx, s.opts("carol", "mx1", keyB))
	wantRefused(t, wrongKey, msgAuthFailed)
	_, unknown := Dial(ctx, s.opts("carol", "nosuch", keyA))
	wantRefused(t, unknown, msgAuthFailed)
	// The client cannot tell an unknown name from a wrong key.
	if wrongKey.Error() != unknown.Error() {
		t.Errorf("wrong key %q and unknown name %q differ", wrongKey, unknown)
	}
	// A valid secret for another user.
	_, err := Dial(ctx, s.opts("carol", "alice-only", keyB))
	wantRefused(t, err, msgNotPermitted)
	// A secret that knows carol, its key short by one byte.
	_, err = Dial(ctx, s.opts("carol", "mx1", append(append([]byte{}, keyA[:31]...), 0, 0)))
	wantRefused(t, err, msgAuthFailed)

	if n := s.handled.Load(); n != 0 {
		t.Errorf("%d refused connections reached Handle", n)
	}
	if testmail.Snapshot(remote) != before {
		t.Errorf("refused clients changed the replica")
	}
	s.wantLog("tcp: refused", "user=carol", "secret=mx1", "authentication failed: wrong key")
	s.wantLog("tcp: refused", "user=carol", "secret=nosuch", "authentication failed: unknown secret name")
	s.wantLog("tcp: refused", "user=carol", "secret=alice-only", `does not permit user \"carol\"`)
}

// Bad user names are refused by the server (the client refuses to send
// them at all).
func TestRefusedUserNames(t *testing.T) {
	s, _, _ := carolServer(t, &Listener{})
	for _, u := range []string{"../carol", "..carol", "a/b", "-rf", "a b", "a\x00b", "a\nb", "caro\x7f", "\xff\xfe", ""} {
		_, err := Dial(context.Background(), s.opts(u, "mx1", keyA))
		if err == nil || errors.Is(err, ErrRefused) {
			t.Errorf("client sent user %q: %v", u, err)
		}
		ok, msg := answer(t, exchange(t, s.addr, rawC1(modeTCP, "mx1", u)))
		if ok || msg != msgBadUser {
			t.Errorf("user %q: s1 ok %v, refusal %q", u, ok, msg)
		}
	}
	s.wantLog("tcp: refused", "reason=", `contains \"..\"`)
	s.wantLog("tcp: refused", "reason=", `contains '/'`)
	s.wantLog("tcp: refused", "starts with '-'")
	s.wantLog("tcp: refused", "empty user name")
	s.wantLog("tcp: refused", "not UTF-8")
}

// A handshake recorded on the wire and replayed on a new connection is
// refused: the server's nonce is fresh.
func TestReplayedHandshake(t *testing.T) {
	s, local, _ := carolServer(t, &Listener{})
	px := startProxy(t, s.addr, nil)
	o := s.opts("carol", "mx1", keyA)
	o.Addr = px.addr
	if _, err := dialSync(t, o, local); err != nil {
		t.Fatalf("sync through the recording proxy: %v", err)
	}
	rec := px.recorded(0)
	if len(rec) < hsLen("mx1", "carol")+100 {
		t.Fatalf("recorded %d bytes", len(rec))
	}
	// The whole session, and the handshake alone.
	for _, b := range [][]byte{rec, rec[:hsLen("mx1", "carol")]} {
		ok, msg := answer(t, exchange(t, s.addr, b))
		if !ok || msg != msgAuthFailed {
			t.Errorf("replay of %d bytes: s1 ok %v, refusal %q", len(b), ok, msg)
		}
	}
	if n := s.handled.Load(); n != 1 {
		t.Errorf("%d sessions handled, want 1 (the original)", n)
	}
	s.wantLog("tcp: refused", "user=carol", "secret=mx1", "replayed")
}

// A party that holds a certificate the client trusts but not the secret
// cannot relay the secret handshake from one TLS session into another:
// the proofs are bound to each session's exported keying material.
func TestRelayedAcrossTLSSessions(t *testing.T) {
	p := newPKI(t)
	s, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, false)})
	// The relay terminates the client's TLS with a certificate from the
	// same CA, and opens its own TLS session to the server.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.serverTLS(t, false))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	relayed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			relayed <- err
			return
		}
		defer c.Close()
		up, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: p.caPool, ServerName: "localhost", MinVersion: tls.VersionTLS13})
		if err != nil {
			relayed <- err
			return
		}
		defer up.Close()
		go io.Copy(up, c)
		_, err = io.Copy(c, up)
		relayed <- err
	}()
	o := s.opts("carol", "mx1", keyA)
	o.Addr = localAddr(ln.Addr().String())
	o.TLS = p.clientTLS(t, false)
	_, err = Dial(context.Background(), o)
	wantRefused(t, err, msgAuthFailed)
	<-relayed
	s.wantLog("tcp: refused", "user=carol", "relayed")
}

// snapshotFiles maps base name to content for a mailbox.
func mailboxContents(t *testing.T, root, mailbox string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, base := range testmail.Files(t, root, mailbox) {
		b, err := os.ReadFile(testmail.Find(t, root, mailbox, base))
		if err != nil {
			t.Fatal(err)
		}
		out[base] = b
	}
	return out
}

// One flipped bit in a record ends the session with an authentication
// error on both ends, and nothing tampered with is applied.
func TestTamperedRecord(t *testing.T) {
	flipAt := func(at int) func(off int, b []byte) ([]byte, bool) {
		return func(off int, b []byte) ([]byte, bool) {
			if at >= off && at < off+len(b) {
				b[at-off] ^= 0x20
			}
			return b, true
		}
	}
	t.Run("first record", func(t *testing.T) {
		s, local, remote := carolServer(t, &Listener{})
		before := testmail.Snapshot(remote)
		px := startProxy(t, s.addr, flipAt(hsLen("mx1", "carol")+10))
		o := s.opts("carol", "mx1", keyA)
		o.Addr = px.addr
		_, err := dialSync(t, o, local)
		wantErr(t, err, "failed authentication")
		if !errors.Is(err, ErrPeerAlert) {
			t.Errorf("client error %v is not the server's alert", err)
		}
		if n := s.opened.Load(); n != 0 {
			t.Errorf("the server opened the replica %d times", n)
		}
		if testmail.Snapshot(remote) != before {
			t.Errorf("the tampered session changed the server's replica")
		}
		s.wantLog("tcp: session failed", "user=carol", "record 0: tcp record failed authentication")
	})
	t.Run("during the bodies", func(t *testing.T) {
		d := t.TempDir()
		local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
		for i := 0; i < 40; i++ {
			testmail.Deliver(t, local, "INBOX", fmt.Sprintf("%d %s", i, strings.Repeat("body text\r\n", 5000)))
		}
		s := startServer(t, &Listener{Secrets: []Secret{{Name: "mx1", Key: keyA, Users: []string{"carol"}}}}, roots{"carol": remote})
		px := startProxy(t, s.addr, flipAt(1<<20))
		o := s.opts("carol", "mx1", keyA)
		o.Addr = px.addr
		_, err := dialSync(t, o, local)
		wantErr(t, err, "failed authentication")
		s.wantLog("tcp: session failed", "user=carol", "tcp record failed authentication")
		// What arrived before the flipped record is intact.
		src := mailboxContents(t, local, "INBOX")
		got := mailboxContents(t, remote, "INBOX")
		if len(got) >= len(src) {
			t.Errorf("the server has %d of %d messages after the broken sync", len(got), len(src))
		}
		for base, b := range got {
			if !bytes.Equal(b, src[base]) {
				t.Errorf("message %s differs from the source", base)
			}
		}
		// The next sync, untouched, converges.
		s2 := startServer(t, &Listener{Secrets: []Secret{{Name: "mx1", Key: keyA, Users: []string{"carol"}}}}, roots{"carol": remote})
		if _, err := dialSync(t, s2.opts("carol", "mx1", keyA), local); err != nil {
			t.Fatal(err)
		}
		testmail.Converged(t, local, remote)
	})
}

// A stream cut in the middle of a session, or of the handshake, is an
// error the server logs.
func TestTruncatedStream(t *testing.T) {
	s, local, _ := carolServer(t, &Listener{})
	cut := hsLen("mx1", "carol") + 100
	px := startProxy(t, s.addr, func(off int, b []byte) ([]byte, bool) {
		if off+len(b) >= cut {
			return b[:cut-off], false
		}
		return b, true
	})
	o := s.opts("carol", "mx1", keyA)
	o.Addr = px.addr
	_, err := dialSync(t, o, local)
	if err == nil {
		t.Fatal("a sync over a cut stream succeeded")
	}
	if out := exchange(t, s.addr, rawC1(modeTCP, "mx1", "carol")[:20]); len(out) != 0 {
		t.Errorf("server answered a truncated hello with %q", out)
	}
	// The server reads the cut stream on its own schedule: wait (bounded)
	// for its line before stopping it, or the stop's cancel may end that
	// session first ("context canceled").
	for i := 0; i < 200 && !strings.Contains(s.logBuf.String(), "truncated"); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	logs := s.stop()
	for _, want := range []string{"truncated", "connection closed during the handshake (reading client nonce)"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log does not say %q:\n%s", want, logs)
		}
	}
}

// fakeServer accepts one connection, reads a client hello and answers
// with b.
func fakeServer(t *testing.T, b []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Read(make([]byte, 512))
		c.Write(b)
		io.Copy(io.Discard, c)
	}()
	return ln.Addr().String()
}

func TestOversizedFields(t *testing.T) {
	t.Run("secret name length", func(t *testing.T) {
		s, _, _ := carolServer(t, &Listener{})
		b := append([]byte(magic), hsVersion, modeTCP, 200)
		b = append(b, bytes.Repeat([]byte("n"), 200)...)
		ok, msg := answer(t, exchange(t, s.addr, b))
		if ok || msg != msgNotTwinbox {
			t.Errorf("s1 ok %v, refusal %q", ok, msg)
		}
		s.wantLog("tcp: refused", "secret name length 200")
	})
	t.Run("record length", func(t *testing.T) {
		s, _, _ := carolServer(t, &Listener{})
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		keys, err := clientHandshake(c, modeTCP, "mx1", "carol", keyA, nil, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{recData, 0xff, 0xff, 0xff, 1, 2, 3})
		rc := newRecordConn(c, keys.s2c, keys.c2s)
		_, err = io.ReadAll(rc)
		if !errors.Is(err, ErrPeerAlert) {
			t.Fatalf("client read %v, want the server's alert", err)
		}
		wantErr(t, err, "length 16777215 out of range")
		s.wantLog("tcp: session failed", "user=carol", "length 16777215 out of range")
	})
	t.Run("refusal message length", func(t *testing.T) {
		addr := fakeServer(t, append([]byte(magic), hsVersion, statusRefuse, 0xff, 0xff))
		_, err := Dial(context.Background(), Options{Addr: addr, User: "carol", SecretName: "mx1", Secret: keyA})
		wantErr(t, err, "refusal message of 65535 bytes")
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("%v is not a protocol error", err)
		}
	})
	t.Run("handshake budget", func(t *testing.T) {
		h := &hsReader{r: bytes.NewReader(make([]byte, 4096)), left: maxHandshake}
		var err error
		for i := 0; i < 10 && err == nil; i++ {
			_, err = h.read(255, "x")
		}
		wantErr(t, err, "handshake longer than 1024 bytes")
	})
}

func TestGarbage(t *testing.T) {
	s, _, _ := carolServer(t, &Listener{})
	junk := make([]byte, 3000)
	rand.Read(junk)
	junk[0] = 'x'
	for _, b := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: mx2\r\n\r\n"), []byte("SSH-2.0-OpenSSH_9.2\r\n"), junk} {
		ok, msg := answer(t, exchange(t, s.addr, b))
		if ok || msg != msgNotTwinbox {
			t.Errorf("%q...: s1 ok %v, refusal %q", b[:8], ok, msg)
		}
	}
	// A newer client version is told which version the server speaks.
	ok, msg := answer(t, exchange(t, s.addr, append([]byte(magic), 9)))
	if ok || !strings.Contains(msg, "unsupported tcp handshake version 9") {
		t.Errorf("version 9: %v %q", ok, msg)
	}
	// Garbage after a valid handshake fails authentication.
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	keys, err := clientHandshake(c, modeTCP, "mx1", "carol", keyA, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(append([]byte{recData, 0, 0, 40}, junk[:40]...))
	_, err = io.ReadAll(newRecordConn(c, keys.s2c, keys.c2s))
	wantErr(t, err, "failed authentication")

	s.wantLog("tcp: refused", `not a twinbox tcp client (it sent \"GET / HT\")`)
	s.wantLog("tcp: refused", `not a twinbox tcp client (it sent \"SSH-2.0-\")`)
	s.wantLog("tcp: refused", "client speaks handshake version 9")
	s.wantLog("tcp: session failed", "record 0: tcp record failed authentication")

	// A client that meets something else than a twinbox server.
	addr := fakeServer(t, []byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	_, err = Dial(context.Background(), Options{Addr: addr, User: "carol", SecretName: "mx1", Secret: keyA})
	wantErr(t, err, "not a twinbox tcp server")
}

// tcp: and tcps: mixed up say so.
func TestModeMismatch(t *testing.T) {
	p := newPKI(t)
	plain, _, _ := carolServer(t, &Listener{})
	o := plain.opts("carol", "mx1", keyA)
	o.Addr = localAddr(plain.addr)
	o.TLS = p.clientTLS(t, false)
	_, err := Dial(context.Background(), o)
	wantErr(t, err, "TLS")
	plain.wantLog("tcp: refused", "the client speaks TLS (tcps:) to a tcp: listener")

	tlsSrv, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, false)})
	_, err = Dial(context.Background(), tlsSrv.opts("carol", "mx1", keyA))
	wantRefused(t, err, "this listener speaks tcps: (TLS)")
	tlsSrv.wantLog("tcp: refused", "TLS handshake", "the client speaks tcp: to a tcps: listener")
	// A client that meets a TLS server's alert says what to do.
	addr := fakeServer(t, []byte{0x15, 3, 3, 0, 2, 2, 70})
	_, err = Dial(context.Background(), Options{Addr: addr, User: "carol", SecretName: "mx1", Secret: keyA})
	wantErr(t, err, "the server answered with TLS: use tcps:")

	// A tcp: hello inside TLS (a mode byte that lies) is refused.
	tlsSrv2, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, false)})
	tc, err := tls.Dial("tcp", localAddr(tlsSrv2.addr), p.clientTLS(t, false))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_, err = clientHandshake(tc, modeTCP, "mx1", "carol", keyA, nil, rand.Reader)
	wantRefused(t, err, "this listener speaks tcps:")
	tlsSrv2.wantLog("tcp: refused", "user=carol", "mode 1 on a tcps: listener")
}

func TestTLSRefusals(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	ctx := context.Background()
	t.Run("untrusted server certificate", func(t *testing.T) {
		s, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, false)})
		o := s.opts("carol", "mx1", keyA)
		o.Addr = localAddr(s.addr)
		o.TLS = other.clientTLS(t, false)
		_, err := Dial(ctx, o)
		wantErr(t, err, "certificate signed by unknown authority")
		s.wantLog("tcp: refused", "TLS handshake", "bad certificate")
	})
	t.Run("wrong server name", func(t *testing.T) {
		s, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, false)})
		o := s.opts("carol", "mx1", keyA)
		o.TLS = p.clientTLS(t, false) // Addr 127.0.0.1: not in the certificate
		_, err := Dial(ctx, o)
		wantErr(t, err, "cannot validate certificate for 127.0.0.1")
		s.wantLog("tcp: refused", "TLS handshake", "bad certificate")

		mx2 := newPKI(t, "mx2.test")
		s2, _, _ := carolServer(t, &Listener{TLS: mx2.serverTLS(t, false)})
		o = s2.opts("carol", "mx1", keyA)
		o.Addr = localAddr(s2.addr)
		o.TLS = mx2.clientTLS(t, false)
		_, err = Dial(ctx, o)
		wantErr(t, err, "certificate is valid for mx2.test, not localhost")
		s2.wantLog("tcp: refused", "TLS handshake", "bad certificate")
	})
	t.Run("missing client certificate", func(t *testing.T) {
		s, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, true)})
		o := s.opts("carol", "mx1", keyA)
		o.Addr = localAddr(s.addr)
		o.TLS = p.clientTLS(t, false)
		_, err := Dial(ctx, o)
		wantErr(t, err, "certificate required")
		s.wantLog("tcp: refused", "TLS handshake", "client didn't provide a certificate")
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		s, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, true)})
		o := s.opts("carol", "mx1", keyA)
		o.Addr = localAddr(s.addr)
		cfg := p.clientTLS(t, false)
		c, err := tls.LoadX509KeyPair(other.clientCert, other.clientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
		o.TLS = cfg
		_, err = Dial(ctx, o)
		wantErr(t, err, "unknown certificate authority")
		s.wantLog("tcp: refused", "TLS handshake", "certificate signed by unknown authority")
	})
	t.Run("TLS 1.2 client", func(t *testing.T) {
		s, _, _ := carolServer(t, &Listener{TLS: p.serverTLS(t, false)})
		cfg := p.clientTLS(t, false)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		cfg.ServerName = "localhost"
		c, err := tls.Dial("tcp", s.addr, cfg)
		if err == nil {
			c.Close()
			t.Fatal("a TLS 1.2 client connected")
		}
		wantErr(t, err, "protocol version")
		// Dial refuses such a configuration itself.
		o := s.opts("carol", "mx1", keyA)
		o.TLS = cfg
		_, err = Dial(ctx, o)
		wantErr(t, err, "TLS 1.3 is required")
		o.TLS = &tls.Config{InsecureSkipVerify: true}
		_, err = Dial(ctx, o)
		wantErr(t, err, "InsecureSkipVerify")
		s.wantLog("tcp: refused", "TLS handshake", "unsupported versions")
	})
}
