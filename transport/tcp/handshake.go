package tcp

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The handshake's messages (docs/tcp.md has the full story):
//
//	C1 client hello  magic(8) version(1) mode(1) nameLen(1) name userLen(1) user
//	                 clientNonce(32) clientShare(32)
//	S1 server hello  magic(8) version(1) status(1), then for status 0
//	                 serverNonce(32) serverShare(32), or for status 1
//	                 msgLen(2) msg
//	C2 client proof  HMAC-SHA256(key, "twinbox tcp client proof v1" || T)
//	S2 server answer status(1), then for status 0
//	                 HMAC-SHA256(key, "twinbox tcp server proof v1" || T), or
//	                 for status 1 msgLen(2) msg
//
// T is the transcript hash (transcript.hash). Every length is one or two
// bytes and checked against its own cap, and each side reads at most
// maxHandshake bytes of the other's handshake.
const (
	magic        = "TWBXAUTH"
	hsVersion    = 1
	nonceLen     = 32
	shareLen     = 32
	proofLen     = sha256.Size
	maxErrLen    = 512
	maxHandshake = 1024
)

// Modes, as the client states them in C1 and both put in the transcript.
const (
	modeTCP byte = 1 // tcp: the AEAD record layer follows
	modeTLS byte = 2 // tcps: inside TLS 1.3
)

const (
	statusOK     byte = 0
	statusRefuse byte = 1
)

// What a refused client is told. The first covers an unknown secret name
// and a wrong key alike.
const (
	msgAuthFailed   = "authentication failed (unknown secret name or wrong key)"
	msgNotPermitted = "this secret does not permit replicating that user"
	msgBadUser      = "invalid user name"
	msgBusy         = "server busy, try again later"
	msgNotTwinbox   = "not a twinbox tcp handshake"
)

// ErrProtocol marks malformed, hostile or truncated handshake or record
// bytes from the peer.
var ErrProtocol = errors.New("tcp transport: protocol error")

// ErrRefused is the server's refusal (errors.Is on a *RefusedError).
var ErrRefused = errors.New("refused by the server")

// ErrServerAuth is a server that could not prove it holds the secret: a
// different key, or not the server the client meant to reach.
var ErrServerAuth = errors.New("the server did not prove it holds the secret")

// RefusedError is a refusal the server sent, with its message (which is
// not authenticated: anyone on the path of a tcp: connection can forge a
// refusal, as they can cut the connection).
type RefusedError struct{ Msg string }

func (e *RefusedError) Error() string   { return "server refused: " + e.Msg }
func (e *RefusedError) Is(t error) bool { return t == ErrRefused }

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// hsReader reads a peer's handshake within a byte budget.
type hsReader struct {
	r    io.Reader
	left int
}

func (h *hsReader) read(n int, what string) ([]byte, error) {
	if n > h.left {
		return nil, protoErr("handshake longer than %d bytes (at %s)", maxHandshake, what)
	}
	h.left -= n
	b := make([]byte, n)
	if _, err := io.ReadFull(h.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: connection closed during the handshake (reading %s): %w", ErrProtocol, what, io.ErrUnexpectedEOF)
		}
		return nil, fmt.Errorf("handshake: reading %s: %w", what, err)
	}
	return b, nil
}

func (h *hsReader) byte(what string) (byte, error) {
	b, err := h.read(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// refusalMsg reads a refusal's message: length(2) text, capped.
func (h *hsReader) refusalMsg() (string, error) {
	l, err := h.read(2, "refusal length")
	if err != nil {
		return "", err
	}
	n := int(binary.BigEndian.Uint16(l))
	if n > maxErrLen {
		return "", protoErr("refusal message of %d bytes (at most %d)", n, maxErrLen)
	}
	b, err := h.read(n, "refusal message")
	if err != nil {
		return "", err
	}
	return printable(string(b)), nil
}

// printable keeps a peer's text from carrying control characters into
// logs and terminals.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// transcript is what both proofs and the session keys are bound to.
type transcript struct {
	mode       byte
	name, user string
	nc, ns     []byte // nonces
	pc, ps     []byte // X25519 shares
	exporter   []byte // TLS keying material (tcps), empty for tcp
}

func (t *transcript) hash() []byte {
	h := sha256.New()
	h.Write([]byte("twinbox tcp handshake v1"))
	h.Write([]byte{hsVersion, t.mode})
	for _, f := range [][]byte{[]byte(t.name), []byte(t.user), t.nc, t.ns, t.pc, t.ps, t.exporter} {
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(f)))
		h.Write(l[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

const (
	labelClient = "twinbox tcp client proof v1"
	labelServer = "twinbox tcp server proof v1"
)

func proof(key []byte, label string, th []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(th)
	return m.Sum(nil)
}

// sessionKeys are the record layer's keys, one per direction.
type sessionKeys struct{ c2s, s2c []byte }

// deriveKeys expands the secret and the X25519 shared secret, salted with
// the transcript, into the two direction keys.
func deriveKeys(key, shared, th []byte) (*sessionKeys, error) {
	ikm := make([]byte, 0, len(key)+len(shared))
	ikm = append(append(ikm, key...), shared...)
	c2s, err := hkdf.Key(sha256.New, ikm, th, "twinbox tcp c2s v1", 32)
	if err != nil {
		return nil, err
	}
	s2c, err := hkdf.Key(sha256.New, ikm, th, "twinbox tcp s2c v1", 32)
	if err != nil {
		return nil, err
	}
	return &sessionKeys{c2s: c2s, s2c: s2c}, nil
}

func refusalBytes(prefix []byte, msg string) []byte {
	if len(msg) > maxErrLen {
		msg = msg[:maxErrLen]
	}
	b := append(prefix, statusRefuse, 0, 0)
	binary.BigEndian.PutUint16(b[len(b)-2:], uint16(len(msg)))
	return append(b, msg...)
}

func s1Prefix() []byte { return append([]byte(magic), hsVersion) }

// clientHandshake runs the client's side on rw. exporter is the TLS
// keying material for tcps (nil for tcp). It returns the record keys for
// tcp (nil for tcps).
func clientHandshake(rw io.ReadWriter, mode byte, name, user string, key, exporter []byte, rnd io.Reader) (*sessionKeys, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if err := ValidUser(user); err != nil {
		return nil, err
	}
	t := transcript{mode: mode, name: name, user: user, exporter: exporter}
	t.nc = make([]byte, nonceLen)
	if _, err := io.ReadFull(rnd, t.nc); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("X25519 key: %w", err)
	}
	t.pc = eph.PublicKey().Bytes()

	c1 := append([]byte(magic), hsVersion, mode, byte(len(name)))
	c1 = append(c1, name...)
	c1 = append(c1, byte(len(user)))
	c1 = append(c1, user...)
	c1 = append(c1, t.nc...)
	c1 = append(c1, t.pc...)
	if _, err := rw.Write(c1); err != nil {
		return nil, fmt.Errorf("handshake: sending hello: %w", err)
	}

	h := &hsReader{r: rw, left: maxHandshake}
	first, err := h.byte("server hello")
	if err != nil {
		return nil, err
	}
	if first == 0x15 || first == 0x16 { // a TLS alert or handshake record
		return nil, protoErr("the server answered with TLS: use tcps: for it")
	}
	m, err := h.read(len(magic)-1, "server hello")
	if err != nil {
		return nil, err
	}
	if m = append([]byte{first}, m...); string(m) != magic {
		return nil, protoErr("not a twinbox tcp server (it answered %q)", printable(string(m)))
	}
	v, err := h.byte("server version")
	if err != nil {
		return nil, err
	}
	st, err := h.byte("server status")
	if err != nil {
		return nil, err
	}
	if st == statusRefuse {
		msg, err := h.refusalMsg()
		if err != nil {
			return nil, err
		}
		return nil, &RefusedError{Msg: msg}
	}
	if v != hsVersion {
		return nil, protoErr("server speaks tcp handshake version %d, this client %d", v, hsVersion)
	}
	if st != statusOK {
		return nil, protoErr("server hello with status %d", st)
	}
	if t.ns, err = h.read(nonceLen, "server nonce"); err != nil {
		return nil, err
	}
	if t.ps, err = h.read(shareLen, "server share"); err != nil {
		return nil, err
	}
	th := t.hash()
	if _, err := rw.Write(proof(key, labelClient, th)); err != nil {
		return nil, fmt.Errorf("handshake: sending proof: %w", err)
	}
	if st, err = h.byte("server answer"); err != nil {
		return nil, err
	}
	switch st {
	case statusOK:
	case statusRefuse:
		msg, err := h.refusalMsg()
		if err != nil {
			return nil, err
		}
		return nil, &RefusedError{Msg: msg}
	default:
		return nil, protoErr("server answer with status %d", st)
	}
	sp, err := h.read(proofLen, "server proof")
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(sp, proof(key, labelServer, th)) {
		return nil, fmt.Errorf("%w %q (a different key, or not the server meant)", ErrServerAuth, name)
	}
	if mode != modeTCP {
		return nil, nil
	}
	pub, err := ecdh.X25519().NewPublicKey(t.ps)
	if err != nil {
		return nil, protoErr("server share: %v", err)
	}
	shared, err := eph.ECDH(pub)
	if err != nil {
		return nil, protoErr("server share: %v", err)
	}
	return deriveKeys(key, shared, th)
}

// serverConfig is what the server's side of the handshake knows.
type serverConfig struct {
	mode    byte
	secrets map[string]*Secret
	// dummy stands in for an unknown secret's key, so that an unknown name
	// costs the same work and gets the same answer as a wrong key.
	dummy []byte
	// busy refuses every client (after reading its hello) as busy.
	busy bool
}

// hsInfo is what the client claimed, for the log, whatever the outcome.
type hsInfo struct {
	user, secret string
	keys         *sessionKeys // tcp: the record layer's keys
}

// refused is a refusal: reason for the log (the client was sent msg).
type refused struct{ reason string }

func (r *refused) Error() string { return r.reason }

// serverHandshake runs the server's side on rw. On success it returns the
// authenticated user and secret; on failure the client has been told
// (when it can still listen) and the error says why, for the log.
func serverHandshake(rw io.ReadWriter, cfg *serverConfig, exporter []byte, rnd io.Reader) (hsInfo, error) {
	var info hsInfo
	h := &hsReader{r: rw, left: maxHandshake}
	refuse1 := func(msg, reason string, args ...any) (hsInfo, error) {
		_, _ = rw.Write(refusalBytes(s1Prefix(), msg))
		return info, &refused{reason: fmt.Sprintf(reason, args...)}
	}
	m, err := h.read(len(magic), "client hello")
	if err != nil {
		return info, err
	}
	if string(m) != magic {
		if m[0] == 0x16 {
			return refuse1(msgNotTwinbox, "the client speaks TLS (tcps:) to a tcp: listener")
		}
		return refuse1(msgNotTwinbox, "not a twinbox tcp client (it sent %q)", printable(string(m)))
	}
	v, err := h.byte("client version")
	if err != nil {
		return info, err
	}
	if v != hsVersion {
		return refuse1(fmt.Sprintf("unsupported tcp handshake version %d (this server speaks %d)", v, hsVersion),
			"client speaks handshake version %d", v)
	}
	mode, err := h.byte("client mode")
	if err != nil {
		return info, err
	}
	n, err := h.byte("secret name length")
	if err != nil {
		return info, err
	}
	if n == 0 || int(n) > maxNameLen {
		return refuse1(msgNotTwinbox, "secret name length %d (1-%d)", n, maxNameLen)
	}
	b, err := h.read(int(n), "secret name")
	if err != nil {
		return info, err
	}
	info.secret = printable(string(b))
	name := string(b)
	if n, err = h.byte("user length"); err != nil {
		return info, err
	}
	if n == 0 {
		return refuse1(msgBadUser, "empty user name")
	}
	if b, err = h.read(int(n), "user"); err != nil {
		return info, err
	}
	info.user = printable(string(b))
	user := string(b)
	t := transcript{mode: mode, name: name, user: user, exporter: exporter}
	if t.nc, err = h.read(nonceLen, "client nonce"); err != nil {
		return info, err
	}
	if t.pc, err = h.read(shareLen, "client share"); err != nil {
		return info, err
	}
	if cfg.busy {
		return refuse1(msgBusy, "too many connections")
	}
	if mode != cfg.mode {
		want := map[byte]string{modeTCP: "tcp:", modeTLS: "tcps:"}[cfg.mode]
		return refuse1("this listener speaks "+want, "the client asked for mode %d on a %s listener", mode, want)
	}
	if err := ValidUser(user); err != nil {
		return refuse1(msgBadUser, "%v", err)
	}
	sec := cfg.secrets[name]
	key := cfg.dummy
	if sec != nil {
		key = sec.Key
	}
	t.ns = make([]byte, nonceLen)
	if _, err := io.ReadFull(rnd, t.ns); err != nil {
		return info, fmt.Errorf("random nonce: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rnd)
	if err != nil {
		return info, fmt.Errorf("X25519 key: %w", err)
	}
	t.ps = eph.PublicKey().Bytes()
	s1 := append(s1Prefix(), statusOK)
	s1 = append(s1, t.ns...)
	s1 = append(s1, t.ps...)
	if _, err := rw.Write(s1); err != nil {
		return info, fmt.Errorf("handshake: sending hello: %w", err)
	}
	cp, err := h.read(proofLen, "client proof")
	if err != nil {
		return info, err
	}
	th := t.hash()
	refuse2 := func(msg, reason string, args ...any) (hsInfo, error) {
		_, _ = rw.Write(refusalBytes(nil, msg))
		return info, &refused{reason: fmt.Sprintf(reason, args...)}
	}
	ok := hmac.Equal(cp, proof(key, labelClient, th))
	switch {
	case sec == nil:
		return refuse2(msgAuthFailed, "authentication failed: unknown secret name")
	case !ok:
		return refuse2(msgAuthFailed, "authentication failed: wrong key (or a replayed or relayed handshake)")
	case !sec.Allows(user):
		return refuse2(msgNotPermitted, "secret %q does not permit user %q", name, user)
	}
	if mode == modeTCP {
		pub, err := ecdh.X25519().NewPublicKey(t.pc)
		if err != nil {
			return refuse2(msgAuthFailed, "client share: %v", err)
		}
		shared, err := eph.ECDH(pub)
		if err != nil {
			return refuse2(msgAuthFailed, "client share: %v", err)
		}
		if info.keys, err = deriveKeys(key, shared, th); err != nil {
			return info, err
		}
	}
	s2 := append([]byte{statusOK}, proof(key, labelServer, th)...)
	if _, err := rw.Write(s2); err != nil {
		return info, fmt.Errorf("handshake: sending proof: %w", err)
	}
	return info, nil
}
