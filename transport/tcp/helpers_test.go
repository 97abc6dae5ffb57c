package tcp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/wire"
)

// Keys used by the tests.
var (
	keyA = bytes.Repeat([]byte{0xa1}, 32)
	keyB = bytes.Repeat([]byte{0xb2}, 48)
)

// syncBuf is a log sink safe for the listener's goroutines.
type syncBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed at the next write
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

// waitFor waits until ok holds for the text, at most limit; it reports
// whether it did.
func (s *syncBuf) waitFor(ok func(string) bool, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		text := s.b.String()
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		if ok(text) {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is a Listener running on 127.0.0.1 in the test's process.
type testServer struct {
	t      *testing.T
	l      *Listener
	addr   string
	logBuf *syncBuf
	cancel context.CancelFunc
	done   chan error
	// handled counts Handle calls; opened counts replicas opened.
	handled, opened atomic.Int32
	stopped         bool
}

// roots maps user to the server's mail root for that user.
type roots map[string]string

// startServer starts l (Handle, if nil, serves the sync protocol for the
// users in rs) and stops it at the end of the test.
func startServer(t *testing.T, l *Listener, rs roots) *testServer {
	t.Helper()
	s := &testServer{t: t, l: l, logBuf: &syncBuf{}, done: make(chan error, 1)}
	if l.Log == nil {
		l.Log = slog.New(slog.NewTextHandler(s.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if l.Handle == nil {
		l.Handle = s.syncHandler(rs)
	}
	inner := l.Handle
	l.Handle = func(ctx context.Context, user string, rw io.ReadWriter) error {
		s.handled.Add(1)
		return inner(ctx, user, rw)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- l.Serve(ctx, ln) }()
	t.Cleanup(func() { s.stop() })
	return s
}

// syncHandler serves the sync protocol for the authenticated user, with
// that user's replica; the wire hello must name the same user.
func (s *testServer) syncHandler(rs roots) func(ctx context.Context, user string, rw io.ReadWriter) error {
	return func(ctx context.Context, user string, rw io.ReadWriter) error {
		return wire.Serve(ctx, rw, func(ctx context.Context, u string, peer replica.Info) (replica.Replica, error) {
			if u != user {
				return nil, fmt.Errorf("authenticated as %q, asked for %q", user, u)
			}
			root, ok := rs[user]
			if !ok {
				return nil, fmt.Errorf("no replica for %q", user)
			}
			s.opened.Add(1)
			return index.Open(ctx, maildir.Location{Root: root}, index.Options{User: user, LockTimeout: 10 * time.Second, Hostname: "server"})
		}, s.l.Log)
	}
}

// stop ends the listener and waits for every connection to finish, so
// that the log is complete. It returns the log.
func (s *testServer) stop() string {
	s.t.Helper()
	if !s.stopped {
		s.stopped = true
		s.cancel()
		if err := <-s.done; err != nil {
			s.t.Errorf("Serve: %v", err)
		}
	}
	return s.logBuf.String()
}

func hasLine(logs string, fragments []string) bool {
	for _, line := range strings.Split(logs, "\n") {
		ok := true
		for _, f := range fragments {
			if !strings.Contains(line, f) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// wantLog checks that a log line has every one of the fragments: it waits
// for the line (the server may log after the client saw the outcome), at
// most a generous bound, then stops the server and looks again.
func (s *testServer) wantLog(fragments ...string) {
	s.t.Helper()
	if !s.stopped && s.logBuf.waitFor(func(text string) bool { return hasLine(text, fragments) }, 30*time.Second) {
		return
	}
	if logs := s.stop(); !hasLine(logs, fragments) {
		s.t.Errorf("no log line with %q in:\n%s", fragments, logs)
	}
}

func (s *testServer) opts(user, name string, key []byte) Options {
	return Options{Addr: s.addr, User: user, SecretName: name, Secret: key, Timeout: 20 * time.Second}
}

// syncWith runs one sync of the local root with the server's replica of
// user over an already dialled stream.
func syncWith(ctx context.Context, rwc io.ReadWriteCloser, user, local string) (*session.Summary, error) {
	rl, err := index.Open(ctx, maildir.Location{Root: local}, index.Options{User: user, LockTimeout: 10 * time.Second, Hostname: "client"})
	if err != nil {
		rwc.Close()
		return nil, err
	}
	defer rl.Close()
	cl, err := wire.Dial(ctx, rwc, user, rl.Info())
	if err != nil {
		return nil, err
	}
	sum, err := session.Run(ctx, rl, cl, session.Options{})
	if cerr := cl.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing: %w", cerr)
	}
	return sum, err
}

// dialSync dials with o and syncs local with the server's replica.
func dialSync(t *testing.T, o Options, local string) (*session.Summary, error) {
	t.Helper()
	ctx := context.Background()
	rwc, err := Dial(ctx, o)
	if err != nil {
		return nil, err
	}
	return syncWith(ctx, rwc, o.User, local)
}

// proxy relays connections to target; for each connection, edit (if set)
// may change or cut the client-to-server bytes: it gets the offset of
// each chunk in the stream and returns what to forward and whether to go
// on. Everything the client sent is recorded.
type proxy struct {
	addr string
	mu   sync.Mutex
	sent [][]byte // client-to-server bytes of each connection
}

func startProxy(t *testing.T, target string, edit func(off int, b []byte) ([]byte, bool)) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			idx := len(p.sent)
			p.sent = append(p.sent, nil)
			p.mu.Unlock()
			wg.Go(func() {
				defer up.Close()
				defer c.Close()
				buf := make([]byte, 32<<10)
				off := 0
				for {
					n, err := c.Read(buf)
					if n > 0 {
						b := append([]byte(nil), buf[:n]...)
						p.mu.Lock()
						p.sent[idx] = append(p.sent[idx], b...)
						p.mu.Unlock()
						more := true
						if edit != nil {
							b, more = edit(off, b)
						}
						off += n
						if _, werr := up.Write(b); werr != nil || !more {
							return
						}
					}
					if err != nil {
						up.(*net.TCPConn).CloseWrite()
						// Let the other direction drain before closing.
						io.Copy(io.Discard, c)
						return
					}
				}
			})
			wg.Go(func() {
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	return p
}

func (p *proxy) recorded(i int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.sent[i]...)
}

// pki is a test CA with a server and a client certificate, as files.
type pki struct {
	dir                   string
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
	caPool                *x509.CertPool
}

func newPKI(t *testing.T, serverNames ...string) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{dir: dir}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "twinbox test CA " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, dns []string) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+".key", "EC PRIVATE KEY", kder)
	}
	if len(serverNames) == 0 {
		serverNames = []string{"localhost", "mx2.test"}
	}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth, serverNames)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth, nil)
	return p
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (p *pki) serverTLS(t *testing.T, requireClientCert bool) *tls.Config {
	t.Helper()
	ca := ""
	if requireClientCert {
		ca = p.caFile
	}
	c, err := ServerTLS(p.serverCert, p.serverKey, ca)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *pki) clientTLS(t *testing.T, withCert bool) *tls.Config {
	t.Helper()
	cert, key := "", ""
	if withCert {
		cert, key = p.clientCert, p.clientKey
	}
	c, err := ClientTLS(p.caFile, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// localAddr replaces 127.0.0.1 in addr with localhost (the name in the
// test certificates).
func localAddr(addr string) string {
	return strings.Replace(addr, "127.0.0.1", "localhost", 1)
}

func wantErr(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Fatalf("error %q does not say %q", err, f)
		}
	}
}

func wantRefused(t *testing.T, err error, msg string) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
		t.Fatalf("error %v, want a refusal", err)
	}
	if re.Msg != msg {
		t.Fatalf("refusal %q, want %q", re.Msg, msg)
	}
}
