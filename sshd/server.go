package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// Defaults of the zero Config.
const (
	DefaultAddr             = ":2222"
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultIdleTimeout      = 10 * time.Minute
	DefaultMaxSessionTime   = 12 * time.Hour
)

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = gliderssh.ErrServerClosed

// Config configures the server. Zero durations take the defaults above; a
// negative duration turns that limit off.
type Config struct {
	// Addr is the TCP address ListenAndServe listens on (":2222").
	Addr string
	// HostKeyPath is the server's private key (OpenSSH or PEM format). It
	// is created (ed25519, mode 0600, with HostKeyPath+".pub") when
	// missing; a key that group or others can access is refused.
	HostKeyPath string
	// AuthorizedKeysPath lists the client keys, in OpenSSH authorized_keys
	// syntax with the options from= and users= (see docs/sshd.md). It is
	// read again whenever it changes.
	AuthorizedKeysPath string
	// HandshakeTimeout bounds the time from the TCP accept to an accepted
	// `twinbox serve` request (key exchange, authentication, session
	// channel, exec request) (30s).
	HandshakeTimeout time.Duration
	// IdleTimeout ends a session when no byte of the sync stream moved in
	// either direction for this long (10m). SSH keepalives do not count.
	IdleTimeout time.Duration
	// MaxSessionTime bounds a connection's whole life (12h).
	MaxSessionTime time.Duration
	// Log receives a line for every accept and every refusal (discarded
	// when nil).
	Log *slog.Logger
	// Serve runs the sync server for user over rw (the session's stdin and
	// stdout). ctx ends when the connection does. A non-nil error ends
	// the session with exit status 1 and the error, on one line, on the
	// session's stderr. Info(ctx) describes the session.
	Serve func(ctx context.Context, user string, rw io.ReadWriter) error
}

// Server is the embedded SSH server. It only ever runs Config.Serve for a
// user its authorized keys file allows.
type Server struct {
	cfg    Config
	log    *slog.Logger
	signer gossh.Signer
	auth   *authFile
	srv    *gliderssh.Server

	mu       sync.Mutex
	conns    map[*connState]struct{}
	closed   bool
	sessions sync.WaitGroup // running Serve callbacks
}

// New checks cfg, loads (or creates) the host key and reads the authorized
// keys file once; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Serve == nil {
		return nil, errors.New("sshd: no Serve function")
	}
	if cfg.AuthorizedKeysPath == "" {
		return nil, errors.New("sshd: no authorized keys file configured")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	cfg.HandshakeTimeout = orDefault(cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.MaxSessionTime = orDefault(cfg.MaxSessionTime, DefaultMaxSessionTime)
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	signer, created, err := loadOrCreateHostKey(cfg.HostKeyPath)
	if err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	fp := gossh.FingerprintSHA256(signer.PublicKey())
	if created {
		log.Info("sshd: created a new host key", "file", cfg.HostKeyPath, "type", signer.PublicKey().Type(), "fingerprint", fp)
	}
	log.Info("sshd: host key", "file", cfg.HostKeyPath, "type", signer.PublicKey().Type(), "fingerprint", fp)
	if _, err := os.Stat(cfg.AuthorizedKeysPath); err != nil {
		return nil, fmt.Errorf("sshd: authorized keys file: %w", err)
	}
	s := &Server{
		cfg:    cfg,
		log:    log,
		signer: signer,
		auth:   &authFile{path: cfg.AuthorizedKeysPath, log: log},
		conns:  map[*connState]struct{}{},
	}
	if _, err := s.auth.load(); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	s.srv = &gliderssh.Server{
		Addr:        cfg.Addr,
		Version:     "twinbox",
		HostSigners: []gliderssh.Signer{signer},
		// Authentication is by public key only: no password, no
		// keyboard-interactive, no "none".
		PublicKeyHandler: s.publicKey,
		ConnCallback:     s.connect,
		ServerConfigCallback: func(ctx gliderssh.Context) *gossh.ServerConfig {
			return &gossh.ServerConfig{MaxAuthTries: 6}
		},
		ConnectionFailedCallback: s.connFailed,
		ChannelHandlers: map[string]gliderssh.ChannelHandler{
			"session": s.session,
			"default": s.otherChannel,
		},
		RequestHandlers: map[string]gliderssh.RequestHandler{
			"default": s.globalRequest,
		},
		SubsystemHandlers: map[string]gliderssh.SubsystemHandler{},
	}
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// HostKey is the server's public host key.
func (s *Server) HostKey() gossh.PublicKey { return s.signer.PublicKey() }

// Serve accepts connections on l until Shutdown or Close (then it returns
// ErrServerClosed).
func (s *Server) Serve(l net.Listener) error {
	s.log.Info("sshd: listening", "addr", l.Addr().String(), "fingerprint", gossh.FingerprintSHA256(s.signer.PublicKey()))
	return s.srv.Serve(l)
}

// ListenAndServe listens on Config.Addr and serves until ctx ends, then
// closes every connection and returns nil.
func (s *Server) ListenAndServe(ctx context.Context) error {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("sshd: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	err = s.Serve(l)
	if errors.Is(err, ErrServerClosed) && ctx.Err() != nil {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for the open ones to end
// (or for ctx, then it returns ctx's error and leaves them running).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listeners and every connection, then waits for the Serve
// callbacks to return (their ctx is cancelled).
func (s *Server) Close() error {
	err := s.srv.Close()
	s.mu.Lock()
	s.closed = true
	conns := make([]*connState, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.raw.Close()
	}
	s.sessions.Wait()
	return err
}

// Info describes the session a Serve callback runs for.
type Info struct {
	Remote      netip.AddrPort
	Login       string // the SSH login name (recorded, not checked)
	Fingerprint string // SHA256 fingerprint of the client's key
	User        string // the mail user being synced
}

type infoKey struct{}

// SessionInfo returns the session's description from a Serve callback's ctx.
func SessionInfo(ctx context.Context) (Info, bool) {
	i, ok := ctx.Value(infoKey{}).(Info)
	return i, ok
}

// connState is what the server knows of one TCP connection.
type connState struct {
	raw    net.Conn
	remote netip.AddrPort
	start  time.Time

	mu        sync.Mutex
	key       gossh.PublicKey // the last key the auth callback accepted
	login     string
	sessions  int
	handshake *time.Timer
	total     *time.Timer
	once      sync.Once
}

func (c *connState) fingerprint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key == nil {
		return ""
	}
	return gossh.FingerprintSHA256(c.key)
}

type stateKey struct{}

func stateOf(ctx gliderssh.Context) *connState {
	c, _ := ctx.Value(stateKey{}).(*connState)
	return c
}

// trackedConn ends the connection's bookkeeping when it closes.
type trackedConn struct {
	net.Conn
	s  *Server
	st *connState
}

func (t *trackedConn) Close() error {
	err := t.Conn.Close()
	t.st.once.Do(func() {
		t.st.mu.Lock()
		if t.st.handshake != nil {
			t.st.handshake.Stop()
		}
		if t.st.total != nil {
			t.st.total.Stop()
		}
		t.st.mu.Unlock()
		t.s.mu.Lock()
		delete(t.s.conns, t.st)
		t.s.mu.Unlock()
	})
	return err
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// connect starts the handshake and total timers of a new connection.
func (s *Server) connect(ctx gliderssh.Context, conn net.Conn) net.Conn {
	st := &connState{raw: conn, remote: addrPort(conn.RemoteAddr()), start: time.Now()}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.conns[st] = struct{}{}
	s.mu.Unlock()
	ctx.SetValue(stateKey{}, st)
	s.log.Debug("sshd: connection", "remote", st.remote.String())
	st.mu.Lock()
	if d := s.cfg.HandshakeTimeout; d > 0 {
		st.handshake = time.AfterFunc(d, func() {
			s.refuse(st, "", "handshake timeout: no accepted sync request within "+d.String())
			conn.Close()
		})
	}
	if d := s.cfg.MaxSessionTime; d > 0 {
		st.total = time.AfterFunc(d, func() {
			s.log.Warn("sshd: session time limit reached, closing the connection", s.attrs(st, "")...)
			conn.Close()
		})
	}
	st.mu.Unlock()
	return &trackedConn{Conn: conn, s: s, st: st}
}

// attrs are the log attributes of a connection (and user, if known).
func (s *Server) attrs(st *connState, user string, more ...any) []any {
	a := []any{"remote", st.remote.String()}
	st.mu.Lock()
	if st.login != "" {
		a = append(a, "login", st.login)
	}
	if st.key != nil {
		a = append(a, "fingerprint", gossh.FingerprintSHA256(st.key))
	}
	st.mu.Unlock()
	if user != "" {
		a = append(a, "user", user)
	}
	return append(a, more...)
}

// refuse logs a refusal.
func (s *Server) refuse(st *connState, user, reason string) {
	s.log.Warn("sshd: refused", s.attrs(st, user, "reason", reason)...)
}

// publicKey is the authentication callback: the key must be in the
// authorized keys file on a line whose from= allows the source address
// and that has a users= option.
func (s *Server) publicKey(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
	st := stateOf(ctx)
	if st == nil {
		return false
	}
	st.mu.Lock()
	st.login = ctx.User()
	st.mu.Unlock()
	reason := s.auth.authorize(key, st.remote.Addr(), "")
	if reason != "" {
		s.log.Warn("sshd: key refused", "remote", st.remote.String(), "login", ctx.User(), "fingerprint", gossh.FingerprintSHA256(key), "reason", reason)
		return false
	}
	st.mu.Lock()
	st.key = key
	st.mu.Unlock()
	s.log.Debug("sshd: key accepted for authentication", "remote", st.remote.String(), "login", ctx.User(), "fingerprint", gossh.FingerprintSHA256(key))
	return true
}

func (s *Server) connFailed(conn net.Conn, err error) {
	s.log.Warn("sshd: connection failed before a session", "remote", conn.RemoteAddr().String(), "reason", err.Error())
}

// otherChannel refuses every channel type but "session": direct-tcpip
// (local forwarding), forwarded-tcpip, x11, auth agent, tun.
func (s *Server) otherChannel(_ *gliderssh.Server, _ *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	st := stateOf(ctx)
	reason := fmt.Sprintf("channel type %q not allowed", nc.ChannelType())
	if nc.ChannelType() == "direct-tcpip" {
		reason = "port forwarding (direct-tcpip) not allowed"
	}
	if st != nil {
		s.refuse(st, "", reason)
	}
	nc.Reject(gossh.Prohibited, reason)
}

// globalRequest refuses every global request: tcpip-forward (remote
// forwarding) and its cancel, and OpenSSH's housekeeping requests.
func (s *Server) globalRequest(ctx gliderssh.Context, _ *gliderssh.Server, req *gossh.Request) (bool, []byte) {
	st := stateOf(ctx)
	switch req.Type {
	case "keepalive@openssh.com", "no-more-sessions@openssh.com", "hostkeys-00@openssh.com", "hostkeys-prove-00@openssh.com":
		if st != nil {
			s.log.Debug("sshd: global request declined", s.attrs(st, "", "request", req.Type)...)
		}
		return false, nil
	case "tcpip-forward", "cancel-tcpip-forward", "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
		if st != nil {
			s.refuse(st, "", fmt.Sprintf("remote port forwarding (%s) not allowed", req.Type))
		}
		return false, nil
	}
	if st != nil {
		s.refuse(st, "", fmt.Sprintf("global request %q not allowed", req.Type))
	}
	return false, nil
}
