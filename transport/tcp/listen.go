package tcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Listener serves tcp: (TLS nil) or tcps: connections. Its zero values
// mean the defaults given with each field.
type Listener struct {
	// Secrets are the shared secrets accepted, each with the users it may
	// replicate. At least one; names unique.
	Secrets []Secret
	// TLS, when set, makes this a tcps: listener: TLS 1.3 only (MinVersion
	// is raised), with the certificate(s) and client certificate policy
	// the configuration says (ServerTLS makes one).
	TLS *tls.Config
	// HandshakeTimeout bounds TLS and the secret handshake (default 10s).
	HandshakeTimeout time.Duration
	// IdleTimeout bounds each read and write of a session: a peer silent
	// for that long is dropped (default 30m, negative: none). It must
	// cover the peer's longest scan of its own replica.
	IdleTimeout time.Duration
	// MaxSessionTime bounds a whole session (default 24h, negative: none).
	MaxSessionTime time.Duration
	// MaxConns bounds the connections handled at once, in handshake or in
	// session (default 64). Those beyond it are told the server is busy.
	MaxConns int
	// Log hears of every connection accepted, refused or ended (default:
	// discard).
	Log *slog.Logger
	// Handle serves one authenticated session of user on rw (the caller
	// runs the sync server as the mail owner there). user has passed
	// ValidUser and the secret's user patterns. ctx ends with the session
	// limits or the listener; rw is closed when Handle returns.
	Handle func(ctx context.Context, user string, rw io.ReadWriter) error

	rand io.Reader // tests: the nonces' source
}

const (
	defaultHandshakeTimeout = 10 * time.Second
	defaultIdleTimeout      = 30 * time.Minute
	defaultMaxSessionTime   = 24 * time.Hour
	defaultMaxConns         = 64
	// maxRefusing bounds the connections being told "busy" at once;
	// beyond it they are closed without a word.
	maxRefusing = 16
)

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// prepare checks the configuration and builds what the handshake needs.
func (l *Listener) prepare() (*serverConfig, *tls.Config, error) {
	if l.Handle == nil {
		return nil, nil, errors.New("tcp listener: no Handle")
	}
	if len(l.Secrets) == 0 {
		return nil, nil, errors.New("tcp listener: no secrets")
	}
	cfg := &serverConfig{mode: modeTCP, secrets: map[string]*Secret{}}
	for i := range l.Secrets {
		s := &l.Secrets[i]
		if err := s.Check(); err != nil {
			return nil, nil, fmt.Errorf("tcp listener: %w", err)
		}
		if cfg.secrets[s.Name] != nil {
			return nil, nil, fmt.Errorf("tcp listener: secret %q named twice", s.Name)
		}
		cp := *s
		cp.Key = append([]byte(nil), s.Key...)
		cp.Users = append([]string(nil), s.Users...)
		cfg.secrets[s.Name] = &cp
	}
	cfg.dummy = make([]byte, 32)
	if _, err := rand.Read(cfg.dummy); err != nil {
		return nil, nil, err
	}
	var tcfg *tls.Config
	if l.TLS != nil {
		tcfg = l.TLS.Clone()
		if tcfg.MaxVersion != 0 && tcfg.MaxVersion < tls.VersionTLS13 {
			return nil, nil, errors.New("tcps listener: TLS 1.3 is required")
		}
		tcfg.MinVersion = tls.VersionTLS13
		if len(tcfg.Certificates) == 0 && tcfg.GetCertificate == nil && tcfg.GetConfigForClient == nil {
			return nil, nil, errors.New("tcps listener: no certificate")
		}
		cfg.mode = modeTLS
	}
	return cfg, tcfg, nil
}

// Serve accepts connections on ln until ctx ends, then closes ln, ends
// every session (closing its connection) and returns nil once all have
// returned. Any other accept error (but a temporary one) is returned the
// same way, after the sessions ended. ln is always closed.
func (l *Listener) Serve(ctx context.Context, ln net.Listener) error {
	cfg, tcfg, err := l.prepare()
	if err != nil {
		ln.Close()
		return err
	}
	log := l.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rnd := l.rand
	if rnd == nil {
		rnd = rand.Reader
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	context.AfterFunc(ctx, func() { ln.Close() })
	maxConns := l.MaxConns
	if maxConns <= 0 {
		maxConns = defaultMaxConns
	}
	s := &server{l: l, cfg: cfg, tls: tcfg, log: log, rand: rnd}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConns)
	refusing := make(chan struct{}, maxRefusing)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
			} else if temporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("tcp: accept failed, retrying", "err", err, "backoff", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
					continue
				case <-ctx.Done():
					t.Stop()
					err = nil
				}
			}
			cancel()
			wg.Wait()
			return err
		}
		backoff = 0
		select {
		case sem <- struct{}{}:
			wg.Go(func() {
				defer func() { <-sem }()
				s.serveConn(ctx, c, false)
			})
		default:
			select {
			case refusing <- struct{}{}:
				wg.Go(func() {
					defer func() { <-refusing }()
					s.serveConn(ctx, c, true)
				})
			default:
				log.Warn("tcp: refused", "remote", c.RemoteAddr().String(), "reason", "too many connections (closed without a word)")
				c.Close()
			}
		}
	}
}

func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

type server struct {
	l    *Listener
	cfg  *serverConfig
	tls  *tls.Config
	log  *slog.Logger
	rand io.Reader
}

// idleConn sets a deadline before each read and write once idle is set.
type idleConn struct {
	net.Conn
	idle atomic.Int64 // nanoseconds; 0: no deadline
}

func (c *idleConn) Read(p []byte) (int, error) {
	if d := c.idle.Load(); d > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(time.Duration(d)))
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if d := c.idle.Load(); d > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(time.Duration(d)))
	}
	return c.Conn.Write(p)
}

// lingerClose half-closes c and reads (a little, briefly) what the client
// still sends, so that closing with unread data does not reset the
// connection before the client has read the refusal.
func lingerClose(c net.Conn) { lingerCloseN(c, 64<<10) }

// lingerCloseN is lingerClose reading at most n bytes.
func lingerCloseN(c net.Conn, n int64) {
	if tcp, ok := c.(interface{ CloseWrite() error }); ok {
		tcp.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, c, n)
}

// serveConn handles one connection: TLS (tcps), the secret handshake,
// then the session. Nothing it meets affects other connections: errors
// and panics end this connection only.
func (s *server) serveConn(ctx context.Context, c net.Conn, busy bool) {
	start := time.Now()
	log := s.log.With("remote", c.RemoteAddr().String())
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			log.Error("tcp: session panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()

	hto := orDefault(s.l.HandshakeTimeout, defaultHandshakeTimeout)
	if busy {
		hto = min(hto, 2*time.Second)
	}
	hctx, hcancel := context.WithTimeout(ctx, hto)
	defer hcancel()
	c.SetDeadline(time.Now().Add(hto))
	stopH := context.AfterFunc(hctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	ic := &idleConn{Conn: c}

	refuse := func(info hsInfo, err error) {
		var args []any
		if info.user != "" {
			args = append(args, "user", info.user)
		}
		if info.secret != "" {
			args = append(args, "secret", info.secret)
		}
		reason := err.Error()
		if (hctx.Err() != nil || isTimeout(err)) && ctx.Err() == nil {
			reason = fmt.Sprintf("handshake timed out after %v (%v)", hto, err)
		}
		log.Warn("tcp: refused", append(args, "reason", reason)...)
	}

	var hs io.ReadWriter = ic
	var exporter []byte
	var tc *tls.Conn
	if s.tls != nil {
		tc = tls.Server(ic, s.tls)
		if err := tc.HandshakeContext(hctx); err != nil {
			var rh tls.RecordHeaderError
			if errors.As(err, &rh) && rh.Conn != nil && bytes.HasPrefix([]byte(magic), rh.RecordHeader[:]) {
				// A tcp: client: tell it in its own terms.
				err = fmt.Errorf("the client speaks tcp: to a tcps: listener (%w)", err)
				rh.Conn.Write(refusalBytes(s1Prefix(), "this listener speaks tcps: (TLS)"))
			}
			refuse(hsInfo{}, fmt.Errorf("TLS handshake: %w", err))
			lingerClose(c)
			return
		}
		cs := tc.ConnectionState()
		var err error
		if exporter, err = cs.ExportKeyingMaterial(exporterLabel, nil, 32); err != nil {
			refuse(hsInfo{}, fmt.Errorf("TLS exporter: %w", err))
			return
		}
		hs = tc
	}
	cfg := s.cfg
	if busy {
		cp := *cfg
		cp.busy = true
		cfg = &cp
	}
	info, err := serverHandshake(hs, cfg, exporter, s.rand)
	if err == nil && !stopH() {
		err = fmt.Errorf("handshake: %w", hctx.Err())
	}
	if err != nil {
		refuse(info, err)
		if tc != nil {
			tc.CloseWrite() // close_notify after the refusal, so the client reads it
		}
		lingerClose(c)
		return
	}
	c.SetDeadline(time.Time{})

	log = log.With("user", info.user, "secret", info.secret)
	log.Info("tcp: accepted", "tls", tc != nil)
	sctx, scancel := context.WithCancel(ctx)
	if d := orDefault(s.l.MaxSessionTime, defaultMaxSessionTime); d > 0 {
		sctx, scancel = context.WithTimeout(ctx, d)
	}
	defer scancel()
	context.AfterFunc(sctx, func() { c.Close() })
	ic.idle.Store(int64(orDefault(s.l.IdleTimeout, defaultIdleTimeout)))
	var sess io.ReadWriteCloser
	if tc != nil {
		sess = tc
	} else {
		sess = newRecordConn(ic, info.keys.c2s, info.keys.s2c)
	}
	err = s.l.Handle(sctx, info.user, sess)
	if rc, ok := sess.(*recordConn); ok && err != nil {
		// A failed session (our alert sent, say, on a record that did
		// not authenticate) while the client may still be sending: half-
		// close and read what comes for a moment, so that closing with
		// its data unread does not reset the connection before the client
		// has read why (it read "connection reset by peer" instead, now
		// and then: TestTamperedRecord/during_the_bodies).
		rc.finishWrites()
		lingerCloseN(c, 64<<20)
	}
	sess.Close()
	args := []any{"duration", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		if errors.Is(sctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (session longer than MaxSessionTime)", err)
		}
		log.Warn("tcp: session failed", append(args, "err", err)...)
		return
	}
	log.Info("tcp: session ended", args...)
}
