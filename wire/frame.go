// Package wire is twinbox's sync protocol: a replica served across a byte
// stream (stdio of `twinbox serve`, an SSH channel, a TCP or TLS
// connection, or an in-process pipe for local-to-local syncs). A Client is a
// replica.Replica whose calls travel to a Server that drives a real replica.
//
// docs/protocol.md describes the bytes; in short:
//
//	frame   = type(1 byte) length(4 bytes, big-endian) payload(length bytes)
//	length <= MaxFrame; a JSON message larger than one frame travels as
//	'P' frames followed by its last part in the frame of its type.
//
// Every call is one request ('Q') and one reply ('R', or 'E' for an error).
// During an apply the server may ask the client for bodies with a 'Q' of
// its own (op "fetch"); bodies stream as 'B' (header), 'D' (data, at most
// ChunkSize each) and 'Z' (end) frames. Nothing is ever buffered whole but
// JSON messages, whose total size is bounded by MaxMessage.
package wire

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/twinbox-mail/twinbox/internal/jsonfast"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// Version is the protocol version this build speaks. Version 3 (session 6)
// adds unsure Born stamps (negative, model/born.go): a version-2 peer would
// read one as a very early known stamp and let an expunge kill a copy a
// client put back, so version 2 is refused rather than downgraded to.
const Version = 3

// Frame types.
const (
	fHello   = 'H'
	fRequest = 'Q'
	fReply   = 'R'
	fError   = 'E'
	fPart    = 'P'
	fBody    = 'B'
	fData    = 'D'
	fEnd     = 'Z'
	fChunk   = 'C' // one piece of a large request or reply
)

// chunkRecords is how many records go in one 'C' message; a chunk is at
// most maxChunkBytes of JSON, and an apply at most maxChunks chunks (50
// million messages: far beyond any mailbox, but a bound on what a peer can
// make the server hold).
const (
	chunkRecords  = 2000
	maxChunkBytes = 16 << 20
	maxChunks     = 25000
)

// Limits.
const (
	MaxFrame   = 1 << 20   // largest frame payload
	ChunkSize  = 256 << 10 // body data per 'D' frame
	MaxMessage = 512 << 20 // largest JSON message (many parts)
)

// maxHello bounds the handshake message: a peer that has not yet said who
// it is cannot make us buffer more than one frame.
const maxHello = MaxFrame

// ErrProtocol marks a malformed or hostile stream.
var ErrProtocol = errors.New("protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// truncated is a stream that ended inside a frame. It is a protocol error
// that also wraps io.ErrUnexpectedEOF: the peer is gone, so there is no one
// to tell.
func truncated(what string) error {
	return fmt.Errorf("%w: truncated %s: %w", ErrProtocol, what, io.ErrUnexpectedEOF)
}

// conn reads and writes frames. It is not safe for concurrent use: one
// side of a connection is driven by one goroutine at a time.
type conn struct {
	r   *bufio.Reader
	w   *bufio.Writer
	hdr [5]byte
	buf []byte
	out []byte // body chunk buffer, reused
	// Counters for reports.
	FramesIn, FramesOut int64
	BytesIn, BytesOut   int64
}

func newConn(rw io.ReadWriter) *conn {
	return &conn{r: bufio.NewReaderSize(rw, 64<<10), w: bufio.NewWriterSize(rw, 64<<10)}
}

// writeFrame writes one frame (not flushed).
func (c *conn) writeFrame(t byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(payload), MaxFrame)
	}
	c.hdr[0] = t
	binary.BigEndian.PutUint32(c.hdr[1:], uint32(len(payload)))
	if _, err := c.w.Write(c.hdr[:]); err != nil {
		return err
	}
	if _, err := c.w.Write(payload); err != nil {
		return err
	}
	c.FramesOut++
	c.BytesOut += int64(len(payload)) + 5
	return nil
}

func (c *conn) flush() error { return c.w.Flush() }

// readFrame reads one frame; the payload is valid until the next read.
func (c *conn) readFrame() (byte, []byte, error) {
	if _, err := io.ReadFull(c.r, c.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, truncated("frame header")
		}
		return 0, nil, err
	}
	t := c.hdr[0]
	n := binary.BigEndian.Uint32(c.hdr[1:])
	// The type first: garbage (an HTTP request, an SSH banner) is more
	// clearly told by its first byte than by what its next four say.
	switch t {
	case fHello, fRequest, fReply, fError, fPart, fBody, fData, fEnd, fChunk:
	default:
		return 0, nil, protoErr("unknown frame type 0x%02x", t)
	}
	if n > MaxFrame {
		return 0, nil, protoErr("frame of %d bytes exceeds the limit of %d", n, MaxFrame)
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	if _, err := io.ReadFull(c.r, c.buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, truncated("frame")
		}
		return 0, nil, err
	}
	c.FramesIn++
	c.BytesIn += int64(n) + 5
	return t, c.buf, nil
}

// writeMsg writes v as JSON in a frame of type t, split into parts when
// large, and flushes.
func (c *conn) writeMsg(t byte, v any) error {
	if err := c.bufferMsg(t, v); err != nil {
		return err
	}
	return c.flush()
}

// bufferMsg is writeMsg without the flush: the message goes out with the
// next flush, or earlier when the buffer fills (a stream of chunks that a
// closing reply flushes: one write for a no-change sync's per-mailbox
// chunks, not one each).
func (c *conn) bufferMsg(t byte, v any) error {
	var b []byte
	switch m := v.(type) {
	case *replica.BeginReply:
		if m == nil {
			break
		}
		// The same bytes as json.Marshal, without reflection: a begin
		// reply's mailbox list and saved state grow with the mailboxes.
		b = jsonfast.AppendBeginReply(nil, m)
	case *replica.ApplyResult:
		if m != nil {
			// The same bytes as json.Marshal (an epoch per mailbox).
			b = jsonfast.AppendApplyResult(nil, m)
		}
	case changesChunk:
		if len(m.Messages) == 0 && len(m.Tombstones) == 0 {
			// {"guid":"..."}, as json.Marshal writes it: a no-change
			// sync sends one per mailbox.
			b = jsonfast.AppendEmptyChunk(nil, &m.GUID)
		}
	}
	if b == nil {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("message of %d bytes exceeds %d", len(b), MaxMessage)
	}
	for len(b) > MaxFrame {
		if err := c.writeFrame(fPart, b[:MaxFrame]); err != nil {
			return err
		}
		b = b[MaxFrame:]
	}
	return c.writeFrame(t, b)
}

// readMsg reads the next JSON message, joining parts. It returns the
// frame type of its last part and the raw JSON.
func (c *conn) readMsg() (byte, []byte, error) { return c.readMsgLimit(MaxMessage) }

// readMsgLimit is readMsg for a message of at most limit bytes.
func (c *conn) readMsgLimit(limit int) (byte, []byte, error) {
	var acc []byte
	for {
		t, p, err := c.readFrame()
		if err == io.EOF && acc != nil {
			return 0, nil, truncated("message (the stream ended after its first parts)")
		}
		if err != nil {
			return 0, nil, err
		}
		if len(acc)+len(p) > limit {
			return 0, nil, protoErr("message exceeds %d bytes", limit)
		}
		switch t {
		case fPart:
			acc = append(acc, p...)
			continue
		case fHello, fRequest, fReply, fError, fBody, fChunk:
			if acc == nil {
				return t, append([]byte(nil), p...), nil
			}
			return t, append(acc, p...), nil
		default:
			return 0, nil, protoErr("unexpected frame %q where a message was expected", t)
		}
	}
}

// request is a call.
type request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// errorMsg is an error reply.
type errorMsg struct {
	Message string `json:"message"`
}

// hello opens a connection.
type hello struct {
	Proto   string `json:"proto"`
	Min     int    `json:"min"`
	Max     int    `json:"max"`
	User    string `json:"user,omitempty"`
	Replica any    `json:"replica,omitempty"`
	Node    *Node  `json:"node,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Node says where a replica lives, so that two syncs of the same user
// started at once from both hosts take the replicas' locks in the same
// order (see docs/protocol.md, "Lock order").
type Node struct {
	// ID is the host's replica ID (twinbox.toml replica_id, default the
	// host name); Host is its host name.
	ID   string `json:"id"`
	Host string `json:"host,omitempty"`
	// Root is the user's mail root on that host.
	Root string `json:"root,omitempty"`
}

// Key orders nodes: the lower key's replica is locked first.
func (n Node) Key() string { return n.ID + "\x00" + n.Root }

// bodyHdr starts a body.
type bodyHdr struct {
	I    int   `json:"i"`
	Size int64 `json:"size"`
}

// bodyReader reads one body's 'D' frames up to its 'Z'.
type bodyReader struct {
	c      *conn
	left   int64 // bytes still announced
	cur    []byte
	ended  bool
	failed error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.cur) == 0 {
		if b.failed != nil {
			return 0, b.failed
		}
		if b.ended {
			return 0, io.EOF
		}
		t, payload, err := b.c.readFrame()
		if err == io.EOF {
			// Not the end of the body: that is a 'Z' frame.
			err = truncated("body")
		}
		if err != nil {
			b.failed = err
			return 0, err
		}
		switch t {
		case fData:
			if int64(len(payload)) > b.left {
				b.failed = protoErr("body longer than announced")
				return 0, b.failed
			}
			b.left -= int64(len(payload))
			b.cur = payload
		case fEnd:
			if b.left != 0 {
				b.failed = protoErr("body shorter than announced (%d bytes missing)", b.left)
				return 0, b.failed
			}
			b.ended = true
		default:
			b.failed = protoErr("unexpected frame %q inside a body", t)
			return 0, b.failed
		}
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

// drain consumes the rest of the body.
func (b *bodyReader) drain() error {
	_, err := io.Copy(io.Discard, b)
	return err
}

// writeBody streams size bytes from r as one body.
func (c *conn) writeBody(i int, size int64, r io.Reader) error {
	hb, _ := json.Marshal(bodyHdr{I: i, Size: size})
	if err := c.writeFrame(fBody, hb); err != nil {
		return err
	}
	if c.out == nil {
		c.out = make([]byte, ChunkSize)
	}
	buf := c.out
	left := size
	for left > 0 {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), left)])
		if n > 0 {
			if werr := c.writeFrame(fData, buf[:n]); werr != nil {
				return werr
			}
			left -= int64(n)
		}
		if err != nil {
			if left > 0 {
				// The file shrank under us: the receiver must not take a
				// short body for a whole one. Abort the stream.
				return fmt.Errorf("message body ended %d bytes early: %w", left, err)
			}
			break
		}
	}
	return c.writeFrame(fEnd, nil)
}
