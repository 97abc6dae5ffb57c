package sshd_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/twinbox-mail/twinbox/sshd"
)

// logRec is one log record, its attributes as strings.
type logRec struct {
	Msg   string
	Level slog.Level
	Attrs map[string]string
}

func (r logRec) String() string { return fmt.Sprintf("%s %q %v", r.Level, r.Msg, r.Attrs) }

// recorder is a slog handler keeping every record, for the tests to wait
// for the lines they expect.
type recorder struct {
	mu    sync.Mutex
	recs  []logRec
	attrs []slog.Attr
	wake  chan struct{}
	t     testing.TB
}

func newRecorder(t testing.TB) *recorder { return &recorder{wake: make(chan struct{}), t: t} }

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) WithGroup(string) slog.Handler            { return h }
func (h *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	// Not used by the package; keep it simple and correct.
	n := &recorder{wake: h.wake, t: h.t}
	n.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &childHandler{root: h, attrs: n.attrs}
}

type childHandler struct {
	root  *recorder
	attrs []slog.Attr
}

func (c *childHandler) Enabled(context.Context, slog.Level) bool { return true }
func (c *childHandler) WithGroup(string) slog.Handler            { return c }
func (c *childHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &childHandler{root: c.root, attrs: append(append([]slog.Attr{}, c.attrs...), as...)}
}
func (c *childHandler) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(c.attrs...)
	return c.root.Handle(ctx, r)
}

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{Msg: r.Message, Level: r.Level, Attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	h.recs = append(h.recs, rec)
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
	return nil
}

// find returns the first record that f accepts.
func (h *recorder) find(f func(logRec) bool) (logRec, bool, chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		if f(r) {
			return r, true, nil
		}
	}
	return logRec{}, false, h.wake
}

// wait waits (bounded) for a record whose message contains msg and whose
// attributes contain each of kv's (key, substring) pairs.
func (h *recorder) wait(t testing.TB, msg string, kv ...string) logRec {
	t.Helper()
	f := func(r logRec) bool {
		if !strings.Contains(r.Msg, msg) {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if !strings.Contains(r.Attrs[kv[i]], kv[i+1]) {
				return false
			}
		}
		return true
	}
	deadline := time.After(30 * time.Second)
	for {
		r, ok, wake := h.find(f)
		if ok {
			return r
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("no log line %q with %q; the log:\n%s", msg, kv, h.dump())
		}
	}
}

// has reports whether some record matches, without waiting.
func (h *recorder) has(msg string, kv ...string) bool {
	_, ok, _ := h.find(func(r logRec) bool {
		if !strings.Contains(r.Msg, msg) {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if !strings.Contains(r.Attrs[kv[i]], kv[i+1]) {
				return false
			}
		}
		return true
	})
	return ok
}

func (h *recorder) dump() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, r := range h.recs {
		fmt.Fprintln(&b, r)
	}
	return b.String()
}

// clientKey is a client key pair: the signer and the private key file.
type clientKey struct {
	signer gossh.Signer
	file   string // OpenSSH private key file, mode 0600
	line   string // authorized_keys form, no options
	fp     string
}

func newClientKey(t testing.TB, dir, name string) clientKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return clientKey{
		signer: s,
		file:   file,
		line:   strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.PublicKey()))) + " " + name,
		fp:     gossh.FingerprintSHA256(s.PublicKey()),
	}
}

// testServer is an embedded server on 127.0.0.1:0.
type testServer struct {
	*sshd.Server
	addr     string
	dir      string
	authPath string
	log      *recorder
	served   atomic.Int32 // Serve calls
	done     chan error
}

type serverOpts struct {
	authorized []string
	serve      func(ctx context.Context, user string, rw io.ReadWriter) error
	idle       time.Duration
	handshake  time.Duration
	total      time.Duration
	hostKey    string // path; default in dir
}

// echoServe answers each line read with "USER:LINE"; it ends at EOF.
func echoServe(ctx context.Context, user string, rw io.ReadWriter) error {
	sc := bufio.NewScanner(rw)
	for sc.Scan() {
		if sc.Text() == "fail" {
			return errors.New("asked to fail\nsecond line")
		}
		if _, err := fmt.Fprintf(rw, "%s:%s\n", user, sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}

func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	dir := t.TempDir()
	ts := &testServer{dir: dir, log: newRecorder(t), done: make(chan error, 1)}
	ts.authPath = filepath.Join(dir, "authorized_keys")
	ts.writeAuth(t, o.authorized...)
	serve := o.serve
	if serve == nil {
		serve = echoServe
	}
	hk := o.hostKey
	if hk == "" {
		hk = filepath.Join(dir, "host_ed25519")
	}
	srv, err := sshd.New(sshd.Config{
		HostKeyPath:        hk,
		AuthorizedKeysPath: ts.authPath,
		IdleTimeout:        o.idle,
		HandshakeTimeout:   o.handshake,
		MaxSessionTime:     o.total,
		Log:                slog.New(ts.log),
		Serve: func(ctx context.Context, user string, rw io.ReadWriter) error {
			ts.served.Add(1)
			return serve(ctx, user, rw)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = srv
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	go func() { ts.done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-ts.done; !errors.Is(err, sshd.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

// writeAuth replaces the authorized keys file (a new inode, so that the
// server sees the change even within one mtime tick).
func (ts *testServer) writeAuth(t testing.TB, lines ...string) {
	t.Helper()
	tmp := ts.authPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, ts.authPath); err != nil {
		t.Fatal(err)
	}
}

// dial connects with the x/crypto client, checking the host key.
func (ts *testServer) dial(t testing.TB, key clientKey) (*gossh.Client, error) {
	t.Helper()
	return gossh.Dial("tcp", ts.addr, &gossh.ClientConfig{
		User:            "vmail",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(key.signer)},
		HostKeyCallback: gossh.FixedHostKey(ts.HostKey()),
		Timeout:         30 * time.Second,
	})
}

func (ts *testServer) mustDial(t testing.TB, key clientKey) *gossh.Client {
	t.Helper()
	c, err := ts.dial(t, key)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run runs cmd in a new session with stdin, returning stdout, stderr and
// the error of Run.
func run(t testing.TB, c *gossh.Client, cmd, stdin string) (string, string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer s.Close()
	var out, errb strings.Builder
	s.Stdin = strings.NewReader(stdin)
	s.Stdout = &out
	s.Stderr = &errb
	err = s.Run(cmd)
	return out.String(), errb.String(), err
}
