package tcp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the listener's port when an address names none: 8946,
// "TWIN" on a phone keypad; not a well-known or IANA-registered service
// port as far as /etc/services knows (ManageSieve's 4190 and doveadm's
// usual 12345 stay free).
const DefaultPort = 8946

// exporterLabel is the TLS exporter label that binds the secret handshake
// to one TLS session (RFC 8446 section 7.5).
const exporterLabel = "EXPORTER-twinbox-tcp-auth-v1"

// Options say how to reach a listener and as whom.
type Options struct {
	// Addr is host[:port] ("mx2", "mx2:9000", "[2001:db8::1]:9000", or a
	// bare IPv6 address); the port defaults to DefaultPort.
	Addr string
	// User is the mail user to replicate.
	User string
	// SecretName and Secret are the shared secret (Secret at least
	// MinKeyLen bytes); the secret itself never goes on the wire.
	SecretName string
	Secret     []byte
	// TLS, when set, makes this tcps: TLS 1.3 (MinVersion is raised to
	// TLS 1.3; ServerName defaults to Addr's host; InsecureSkipVerify is
	// refused). Nil is tcp: with the AEAD record layer.
	TLS *tls.Config
	// Timeout bounds connecting, TLS and the secret handshake (default
	// 30s). The sync itself has no timeout here.
	Timeout time.Duration
	// Dialer, if set, makes the TCP connection (tests; a proxy).
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// SplitAddr returns the host and port of host[:port].
func SplitAddr(addr string) (host string, port int, err error) {
	if addr == "" {
		return "", 0, errors.New("empty address")
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a host name, an IPv4 address, [v6] or a bare v6 address.
		h = addr
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
			if net.ParseIP(h) == nil {
				return "", 0, fmt.Errorf("address %q: want host[:port]", addr)
			}
		}
		if strings.ContainsAny(h, "[]/ ") || (strings.Contains(h, ":") && net.ParseIP(h) == nil) {
			return "", 0, fmt.Errorf("address %q: want host[:port]", addr)
		}
		return h, DefaultPort, nil
	}
	if h == "" {
		return "", 0, fmt.Errorf("address %q: no host", addr)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("address %q: bad port %q", addr, p)
	}
	return h, n, nil
}

// Dial connects to a tcp: or tcps: listener, runs the secret handshake for
// o.User and returns the authenticated stream, ready for wire.Dial.
// A refusal is a *RefusedError (errors.Is ErrRefused); a server that does
// not prove the secret is ErrServerAuth.
func Dial(ctx context.Context, o Options) (io.ReadWriteCloser, error) {
	host, port, err := SplitAddr(o.Addr)
	if err != nil {
		return nil, err
	}
	if err := CheckName(o.SecretName); err != nil {
		return nil, err
	}
	if len(o.Secret) < MinKeyLen {
		return nil, fmt.Errorf("secret %q: key of %d bytes, need at least %d", o.SecretName, len(o.Secret), MinKeyLen)
	}
	if err := ValidUser(o.User); err != nil {
		return nil, err
	}
	var tcfg *tls.Config
	if o.TLS != nil {
		if o.TLS.InsecureSkipVerify {
			return nil, errors.New("tcps: refusing InsecureSkipVerify: the server certificate must be verified")
		}
		if o.TLS.MaxVersion != 0 && o.TLS.MaxVersion < tls.VersionTLS13 {
			return nil, errors.New("tcps: TLS 1.3 is required")
		}
		tcfg = o.TLS.Clone()
		tcfg.MinVersion = tls.VersionTLS13
		if tcfg.ServerName == "" {
			tcfg.ServerName = host
		}
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := o.Dialer
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	scheme := "tcp"
	if tcfg != nil {
		scheme = "tcps"
	}
	where := fmt.Sprintf("%s:%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)))
	raw, err := dial(hctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	ok := false
	defer func() {
		if !ok {
			raw.Close()
		}
	}()
	// The handshake's reads and writes end at the deadline, or when ctx is
	// cancelled.
	deadline, _ := hctx.Deadline()
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(hctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) (io.ReadWriteCloser, error) {
		if cerr := hctx.Err(); cerr != nil && isTimeout(err) {
			err = fmt.Errorf("%w (%v)", err, cerr)
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if tcfg == nil {
		keys, err := clientHandshake(raw, modeTCP, o.SecretName, o.User, o.Secret, nil, rand.Reader)
		if err != nil {
			return fail(err)
		}
		if !stop() {
			return fail(hctx.Err())
		}
		raw.SetDeadline(time.Time{})
		ok = true
		return newRecordConn(raw, keys.s2c, keys.c2s), nil
	}
	tc := tls.Client(raw, tcfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		return fail(fmt.Errorf("TLS: %w", err))
	}
	cs := tc.ConnectionState()
	if cs.Version != tls.VersionTLS13 {
		return fail(errors.New("TLS: not TLS 1.3"))
	}
	exp, err := cs.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		return fail(fmt.Errorf("TLS exporter: %w", err))
	}
	if _, err := clientHandshake(tc, modeTLS, o.SecretName, o.User, o.Secret, exp, rand.Reader); err != nil {
		return fail(err)
	}
	if !stop() {
		return fail(hctx.Err())
	}
	raw.SetDeadline(time.Time{})
	ok = true
	return tc, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ClientTLS makes a tcps: client configuration: the server certificate is
// verified against caFile's certificates (PEM), or the system roots when
// caFile is empty; with certFile and keyFile the client presents that
// certificate (for listeners that require one).
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// ServerTLS makes a tcps: listener configuration: TLS 1.3 only, the
// certificate and key from PEM files; with clientCAFile, every client must
// present a certificate that chains to one of its certificates.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c}}
	if clientCAFile != "" {
		pool, err := loadPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificates", file)
	}
	return pool, nil
}
