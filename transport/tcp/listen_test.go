package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
)

func TestListenerConfig(t *testing.T) {
	h := func(context.Context, string, io.ReadWriter) error { return nil }
	good := Secret{Name: "mx1", Key: keyA, Users: []string{"*"}}
	for _, c := range []struct {
		l    Listener
		want string
	}{
		{Listener{Secrets: []Secret{good}}, "no Handle"},
		{Listener{Handle: h}, "no secrets"},
		{Listener{Handle: h, Secrets: []Secret{good, good}}, `secret "mx1" named twice`},
		{Listener{Handle: h, Secrets: []Secret{{Name: "mx1", Key: keyA[:31], Users: []string{"*"}}}}, "key of 31 bytes, need at least 32"},
		{Listener{Handle: h, Secrets: []Secret{{Name: "mx1", Key: keyA}}}, "no user patterns"},
		{Listener{Handle: h, Secrets: []Secret{{Name: "m x", Key: keyA, Users: []string{"*"}}}}, "printable ASCII"},
		{Listener{Handle: h, Secrets: []Secret{{Name: "mx1", Key: keyA, Users: []string{"a b"}}}}, "bad user pattern"},
		{Listener{Handle: h, Secrets: []Secret{good}, TLS: &tls.Config{}}, "no certificate"},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		err = c.l.Serve(context.Background(), ln)
		wantErr(t, err, c.want)
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener left open after a bad configuration: %v", err)
		}
	}
}

// When MaxConns connections are in progress, the next is told the server
// is busy; once one ends, a client gets through again.
func TestBusy(t *testing.T) {
	s, local, remote := carolServer(t, &Listener{MaxConns: 1})
	hold, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	hold.Write([]byte(magic)) // in its handshake: the one slot is taken
	_, err = Dial(context.Background(), s.opts("carol", "mx1", keyA))
	wantRefused(t, err, msgBusy)
	s.wantLog("tcp: refused", "user=carol", "too many connections")
	hold.Close()
	// The slot frees once the server has seen the close.
	if !s.logBuf.waitFor(func(text string) bool { return strings.Contains(text, "reading client version") }, 30*time.Second) {
		t.Fatal("the held connection was not refused")
	}
	var sumErr error
	for i := 0; i < 100; i++ { // the slot is freed just after the log line
		if _, sumErr = dialSync(t, s.opts("carol", "mx1", keyA), local); !errors.Is(sumErr, ErrRefused) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sumErr != nil {
		t.Fatal(sumErr)
	}
	testmail.Converged(t, local, remote)
}

// A client that never finishes its handshake is dropped after
// HandshakeTimeout; one that goes silent in a session after IdleTimeout.
func TestTimeouts(t *testing.T) {
	s, _, _ := carolServer(t, &Listener{HandshakeTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte(magic))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("server sent %q, %v", b, err)
	}
	s.wantLog("tcp: refused", "handshake timed out after 200ms")

	rwc, err := Dial(context.Background(), s.opts("carol", "mx1", keyA))
	if err != nil {
		t.Fatal(err)
	}
	defer rwc.Close()
	if b, err := io.ReadAll(rwc); err != nil || len(b) != 0 {
		t.Errorf("idle session: read %q, %v (want a clean end)", b, err)
	}
	s.wantLog("tcp: session failed", "user=carol", "i/o timeout")
}

// MaxSessionTime ends a session that goes on too long.
func TestMaxSessionTime(t *testing.T) {
	started := make(chan struct{})
	s := startServer(t, &Listener{
		Secrets:        []Secret{{Name: "mx1", Key: keyA, Users: []string{"*"}}},
		MaxSessionTime: 200 * time.Millisecond,
		Handle: func(ctx context.Context, user string, rw io.ReadWriter) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		},
	}, nil)
	rwc, err := Dial(context.Background(), s.opts("carol", "mx1", keyA))
	if err != nil {
		t.Fatal(err)
	}
	defer rwc.Close()
	<-started
	io.ReadAll(rwc)
	s.wantLog("tcp: session failed", "session longer than MaxSessionTime")
}

// A session the sync server refuses, a connection that hangs in its handshake
// and one that sends garbage do not disturb a sync running beside them.
func TestBadConnectionsIsolated(t *testing.T) {
	d := t.TempDir()
	local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
	fillPair(t, local, remote)
	s := startServer(t, &Listener{Secrets: []Secret{{Name: "mx1", Key: keyA, Users: []string{"*"}}}}, roots{"carol": remote})
	hang, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	hang.Write([]byte(magic)[:3])
	// A user the secret allows but who has no replica here: the sync
	// server refuses it (a handler that panics is the next test).
	_, err = dialSync(t, s.opts("dave", "mx1", keyA), local)
	wantErr(t, err, `no replica for "dave"`)
	exchange(t, s.addr, []byte("garbage garbage garbage"))
	if _, err := dialSync(t, s.opts("carol", "mx1", keyA), local); err != nil {
		t.Fatalf("sync beside bad connections: %v", err)
	}
	testmail.Converged(t, local, remote)
	s.wantLog("tcp: refused", "not a twinbox tcp client")
}

func TestHandlerPanicIsolated(t *testing.T) {
	d := t.TempDir()
	local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
	fillPair(t, local, remote)
	var s *testServer
	sync := func(ctx context.Context, user string, rw io.ReadWriter) error {
		return s.syncHandler(roots{"carol": remote})(ctx, user, rw)
	}
	s = startServer(t, &Listener{
		Secrets: []Secret{{Name: "mx1", Key: keyA, Users: []string{"*"}}},
		Handle: func(ctx context.Context, user string, rw io.ReadWriter) error {
			if user == "panic" {
				panic("handler bug")
			}
			return sync(ctx, user, rw)
		},
	}, nil)
	rwc, err := Dial(context.Background(), s.opts("panic", "mx1", keyA))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rwc)
	if !errors.Is(err, ErrTruncated) {
		t.Errorf("client of a panicked session: %v, want a truncated stream", err)
	}
	rwc.Close()
	if _, err := dialSync(t, s.opts("carol", "mx1", keyA), local); err != nil {
		t.Fatalf("sync after a panicked session: %v", err)
	}
	testmail.Converged(t, local, remote)
	s.wantLog("tcp: session panicked", "user=panic", "handler bug")
}
