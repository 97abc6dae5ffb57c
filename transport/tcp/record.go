package tcp

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// The record layer of tcp: (docs/tcp.md):
//
//	record = type(1) length(3, big-endian) sealed(length bytes)
//	sealed = AES-256-GCM(key of the direction, nonce = 4 zero bytes ||
//	         sequence number (8, big-endian), plaintext, additional data =
//	         the 4 header bytes)
//
// type is recData, recClose or recAlert. A close record carries no
// plaintext and marks the clean end of a direction; an alert carries a
// short reason (at most maxAlert bytes) and ends the direction too: a side
// that reads a record that fails authentication or breaks a rule says so
// in an alert before it hangs up, so that both ends log the cause. The sequence number of a direction
// starts at 0 and grows by one per record, so a record dropped, repeated,
// reordered or moved to the other direction fails to open.
const (
	recData  byte = 'D'
	recClose byte = 'Z'
	recAlert byte = 'A'
	maxAlert      = 256
	// MaxRecord is the largest plaintext of one record.
	MaxRecord = 64 << 10
	tagLen    = 16
	hdrLen    = 4
)

// ErrAuth is a record that failed authentication: the stream was tampered
// with, reordered or corrupted.
var ErrAuth = errors.New("tcp record failed authentication (tampered with, reordered or corrupted)")

// ErrTruncated is a stream that ended without the peer's close record.
var ErrTruncated = fmt.Errorf("%w: the stream ended without the peer's close record (truncated): %w", ErrProtocol, io.ErrUnexpectedEOF)

// ErrPeerAlert is the peer's alert: it found our stream broken (its reason
// follows in the error's text).
var ErrPeerAlert = errors.New("the peer ended the stream with an error")

// recordConn is an AEAD-protected stream over a connection. Reads and
// writes may run concurrently (one reader, one writer); Close may be
// called from any goroutine.
type recordConn struct {
	conn io.ReadWriteCloser

	rmu   sync.Mutex
	raead cipher.AEAD
	rseq  uint64
	rbuf  []byte // ciphertext buffer, reused
	rpend []byte // plaintext not yet returned
	rerr  error

	wmu    sync.Mutex
	waead  cipher.AEAD
	wseq   uint64
	wbuf   []byte
	werr   error
	closed bool
}

func newAEAD(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // 32-byte keys only
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return a
}

// newRecordConn wraps conn with readKey for what arrives and writeKey for
// what leaves.
func newRecordConn(conn io.ReadWriteCloser, readKey, writeKey []byte) *recordConn {
	return &recordConn{
		conn:  conn,
		raead: newAEAD(readKey),
		waead: newAEAD(writeKey),
	}
}

func nonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

// Read returns plaintext of authenticated records in order. It returns
// io.EOF only after the peer's close record; a stream that ends without
// one is ErrTruncated, and a record that does not open is ErrAuth. Errors
// are final.
func (c *recordConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.rpend) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		c.rerr = c.readRecord()
		if c.rerr != nil && !errors.Is(c.rerr, ErrTruncated) && (errors.Is(c.rerr, ErrAuth) || errors.Is(c.rerr, ErrProtocol)) {
			c.alert(c.rerr.Error())
		}
	}
	n := copy(p, c.rpend)
	c.rpend = c.rpend[n:]
	return n, nil
}

func (c *recordConn) readRecord() error {
	if c.rbuf == nil {
		c.rbuf = make([]byte, hdrLen+MaxRecord+tagLen)
	}
	hdr := c.rbuf[:hdrLen]
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrTruncated
		}
		return err
	}
	typ := hdr[0]
	n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	switch {
	case typ != recData && typ != recClose && typ != recAlert:
		return protoErr("record %d: unknown type 0x%02x", c.rseq, typ)
	case n < tagLen || n > MaxRecord+tagLen:
		return protoErr("record %d: length %d out of range (%d-%d)", c.rseq, n, tagLen, MaxRecord+tagLen)
	case typ == recClose && n != tagLen:
		return protoErr("record %d: close record of length %d", c.rseq, n)
	case typ == recAlert && n > maxAlert+tagLen:
		return protoErr("record %d: alert of length %d", c.rseq, n)
	}
	body := c.rbuf[hdrLen : hdrLen+n]
	if _, err := io.ReadFull(c.conn, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrTruncated
		}
		return err
	}
	pt, err := c.raead.Open(body[:0], nonce(c.rseq), body, hdr)
	if err != nil {
		return fmt.Errorf("record %d: %w", c.rseq, ErrAuth)
	}
	c.rseq++
	switch typ {
	case recClose:
		return io.EOF
	case recAlert:
		return fmt.Errorf("%w: %s", ErrPeerAlert, printable(string(pt)))
	}
	c.rpend = pt
	return nil
}

// Write seals p into records of at most MaxRecord bytes.
func (c *recordConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	done := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxRecord)]
		if err := c.writeRecord(recData, chunk); err != nil {
			c.werr = err
			return done, err
		}
		done += len(chunk)
		p = p[len(chunk):]
	}
	return done, nil
}

func (c *recordConn) writeRecord(typ byte, pt []byte) error {
	if c.wbuf == nil {
		c.wbuf = make([]byte, 0, hdrLen+MaxRecord+tagLen)
	}
	n := len(pt) + tagLen
	b := append(c.wbuf[:0], typ, byte(n>>16), byte(n>>8), byte(n))
	b = c.waead.Seal(b, nonce(c.wseq), pt, b[:hdrLen])
	c.wseq++
	_, err := c.conn.Write(b)
	return err
}

// alert tells the peer why this side hangs up, if no write is in progress
// (best effort: the peer may not be listening), and ends the writes.
func (c *recordConn) alert(reason string) {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if c.closed || c.werr != nil {
		return
	}
	if len(reason) > maxAlert {
		reason = reason[:maxAlert]
	}
	c.closed = true
	c.werr = c.writeRecord(recAlert, []byte(reason))
	if c.werr == nil {
		c.werr = net.ErrClosed
	}
}

// CloseWrite sends the close record: the peer reads io.EOF after what was
// written. Further writes fail.
func (c *recordConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.werr != nil {
		return c.werr
	}
	c.werr = c.writeRecord(recClose, nil)
	return c.werr
}

// finishWrites sends the close record, unless an alert or a close record
// ended the writes already or a write is in progress; the connection stays
// open (Close closes it).
func (c *recordConn) finishWrites() {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if !c.closed && c.werr == nil {
		c.werr = c.writeRecord(recClose, nil)
	}
	c.closed = true
}

// Close sends the close record (when the connection still takes writes
// and no write is in progress) and closes the connection. A write blocked
// on a stalled peer does not block Close: the connection is closed under
// it.
func (c *recordConn) Close() error {
	if c.wmu.TryLock() {
		if !c.closed && c.werr == nil {
			// The peer may be gone already: nothing to tell it then.
			c.werr = c.writeRecord(recClose, nil)
		}
		c.closed = true
		c.wmu.Unlock()
	}
	return c.conn.Close()
}
