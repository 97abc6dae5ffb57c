package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/sync/replica"
)

// rawFrame encodes one frame by hand (independently of conn.writeFrame).
func rawFrame(t byte, payload []byte) []byte {
	b := make([]byte, 5+len(payload))
	b[0] = t
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[5:], payload)
	return b
}

// rawHeader is a frame header announcing n bytes, without the payload.
func rawHeader(t byte, n uint32) []byte {
	b := []byte{t, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], n)
	return b
}

// readerConn is a conn that reads from b and writes to w.
func readerConn(b []byte, w io.Writer) *conn {
	return newConn(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(b), w})
}

// writeConn is a conn that writes to buf and reads nothing.
func writeConn(buf *bytes.Buffer) *conn {
	return newConn(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(nil), buf})
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

var frameTypes = []byte{fHello, fRequest, fReply, fError, fPart, fBody, fData, fEnd, fChunk}

func TestFrameRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 5, 4096, ChunkSize, MaxFrame - 1, MaxFrame}
	var buf bytes.Buffer
	w := writeConn(&buf)
	var want [][]byte
	var types []byte
	for _, ft := range frameTypes {
		for _, n := range sizes {
			p := pattern(n)
			if err := w.writeFrame(ft, p); err != nil {
				t.Fatalf("writeFrame(%q, %d bytes): %v", ft, n, err)
			}
			want = append(want, p)
			types = append(types, ft)
		}
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	// The bytes are exactly type, big-endian length, payload.
	var enc []byte
	for i := range want {
		enc = append(enc, rawFrame(types[i], want[i])...)
	}
	if !bytes.Equal(buf.Bytes(), enc) {
		t.Fatalf("encoding differs from type|len32be|payload")
	}
	if w.FramesOut != int64(len(want)) || w.BytesOut != int64(len(enc)) {
		t.Errorf("write counters %d frames %d bytes, want %d %d", w.FramesOut, w.BytesOut, len(want), len(enc))
	}
	r := readerConn(buf.Bytes(), io.Discard)
	for i := range want {
		ft, p, err := r.readFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if ft != types[i] || !bytes.Equal(p, want[i]) {
			t.Fatalf("frame %d: got %q/%d bytes, want %q/%d bytes", i, ft, len(p), types[i], len(want[i]))
		}
	}
	if _, _, err := r.readFrame(); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
	if r.FramesIn != int64(len(want)) || r.BytesIn != int64(len(enc)) {
		t.Errorf("read counters %d frames %d bytes, want %d %d", r.FramesIn, r.BytesIn, len(want), len(enc))
	}
}

func TestWriteFrameRefusesOversized(t *testing.T) {
	var buf bytes.Buffer
	w := writeConn(&buf)
	if err := w.writeFrame(fData, make([]byte, MaxFrame+1)); err == nil {
		t.Fatal("writeFrame accepted a payload larger than MaxFrame")
	}
	w.flush()
	if buf.Len() != 0 {
		t.Errorf("a refused frame wrote %d bytes", buf.Len())
	}
}

type bigMsg struct {
	Op   string   `json:"op"`
	Data string   `json:"data"`
	List []uint32 `json:"list"`
}

func TestMessageInParts(t *testing.T) {
	// Sizes around the frame limit and well above it.
	for _, n := range []int{0, 100, MaxFrame - 40, MaxFrame - 25, MaxFrame, 2*MaxFrame + 12345, 5 * MaxFrame} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			in := bigMsg{Op: "changes", Data: strings.Repeat("x", n), List: []uint32{1, 2, 4294967295}}
			var buf bytes.Buffer
			w := writeConn(&buf)
			if err := w.writeMsg(fReply, in); err != nil {
				t.Fatal(err)
			}
			js, _ := json.Marshal(in)
			wantFrames := (len(js) + MaxFrame - 1) / MaxFrame
			if w.FramesOut != int64(wantFrames) {
				t.Errorf("%d bytes of JSON in %d frames, want %d", len(js), w.FramesOut, wantFrames)
			}
			// Every frame but the last is a part, none is over the limit.
			r := readerConn(buf.Bytes(), io.Discard)
			for i := 0; i < wantFrames; i++ {
				ft, p, err := r.readFrame()
				if err != nil {
					t.Fatal(err)
				}
				want := byte(fPart)
				if i == wantFrames-1 {
					want = fReply
				}
				if ft != want || len(p) > MaxFrame {
					t.Fatalf("frame %d: %q of %d bytes", i, ft, len(p))
				}
			}
			r = readerConn(buf.Bytes(), io.Discard)
			ft, b, err := r.readMsg()
			if err != nil {
				t.Fatal(err)
			}
			var out bigMsg
			if err := json.Unmarshal(b, &out); err != nil {
				t.Fatal(err)
			}
			if ft != fReply || out.Op != in.Op || out.Data != in.Data || fmt.Sprint(out.List) != fmt.Sprint(in.List) {
				t.Fatalf("message came back different (type %q, %d bytes of data)", ft, len(out.Data))
			}
		})
	}
}

// repeatReader returns b over and over.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

func TestOversizedFrameHeaderRefused(t *testing.T) {
	for _, n := range []uint32{MaxFrame + 1, 1 << 30, 0xffffffff} {
		// A header with no payload behind it: refusing must not wait for
		// (or allocate) the announced bytes.
		c := readerConn(rawHeader(fRequest, n), io.Discard)
		_, _, err := c.readFrame()
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "exceeds") {
			t.Errorf("length %d: %v, want a protocol error about the limit", n, err)
		}
		if cap(c.buf) != 0 {
			t.Errorf("length %d: a buffer of %d bytes was allocated", n, cap(c.buf))
		}
	}
	// Many in a row allocate next to nothing.
	c := newConn(struct {
		io.Reader
		io.Writer
	}{&repeatReader{b: rawHeader(fPart, 0xfffffff0)}, io.Discard})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 1000; i++ {
		if _, _, err := c.readFrame(); !errors.Is(err, ErrProtocol) {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("1000 refused headers allocated %d bytes", d)
	}
}

func TestUnknownFrameTypes(t *testing.T) {
	known := map[byte]bool{}
	for _, ft := range frameTypes {
		known[ft] = true
	}
	for i := 0; i < 256; i++ {
		ft := byte(i)
		if known[ft] {
			continue
		}
		c := readerConn(rawFrame(ft, []byte("{}")), io.Discard)
		_, _, err := c.readFrame()
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), fmt.Sprintf("unknown frame type 0x%02x", ft)) {
			t.Errorf("type 0x%02x: %v", ft, err)
		}
	}
}

func TestMessageFramesOnly(t *testing.T) {
	// Body frames where a message is expected, also after parts.
	for _, in := range [][]byte{
		rawFrame(fData, []byte("x")),
		rawFrame(fEnd, nil),
		append(rawFrame(fPart, []byte(`{"op":`)), rawFrame(fData, []byte(`"x"}`))...),
	} {
		c := readerConn(in, io.Discard)
		if _, _, err := c.readMsg(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "where a message was expected") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// partsReader yields n 'P' frames of MaxFrame bytes, then a 'Q' frame,
// without holding them in memory.
type partsReader struct {
	n    int
	hdr  []byte
	left int // payload bytes of the current frame still to give
	done bool
}

func (r *partsReader) Read(p []byte) (int, error) {
	if len(r.hdr) == 0 && r.left == 0 {
		switch {
		case r.n > 0:
			r.n--
			r.hdr, r.left = rawHeader(fPart, MaxFrame), MaxFrame
		case !r.done:
			r.done = true
			r.hdr = rawFrame(fRequest, []byte("{}"))
		default:
			return 0, io.EOF
		}
	}
	if len(r.hdr) > 0 {
		n := copy(p, r.hdr)
		r.hdr = r.hdr[n:]
		return n, nil
	}
	n := min(len(p), r.left)
	for i := range p[:n] {
		p[i] = ' '
	}
	r.left -= n
	return n, nil
}

func TestMessageLimit(t *testing.T) {
	// The limit applies to the sum of the parts, checked as they come.
	var in []byte
	for i := 0; i < 3; i++ {
		in = append(in, rawFrame(fPart, make([]byte, 1000))...)
	}
	in = append(in, rawFrame(fRequest, []byte("{}"))...)
	c := readerConn(in, io.Discard)
	if _, _, err := c.readMsgLimit(2500); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "exceeds 2500 bytes") {
		t.Errorf("3000 bytes of parts, limit 2500: %v", err)
	}
	if c.FramesIn != 3 {
		t.Errorf("refused after %d frames, want 3", c.FramesIn)
	}
	c = readerConn(in, io.Discard)
	if _, b, err := c.readMsgLimit(3002); err != nil || len(b) != 3002 {
		t.Errorf("3002 bytes, limit 3002: %d bytes, %v", len(b), err)
	}

	// The handshake takes one frame at most: a peer that has not said who
	// it is cannot make the server buffer parts.
	hello := append(rawFrame(fPart, make([]byte, MaxFrame)), rawFrame(fHello, []byte("{}"))...)
	c = readerConn(hello, io.Discard)
	if _, _, err := c.readMsgLimit(maxHello); !errors.Is(err, ErrProtocol) {
		t.Errorf("hello of two frames: %v", err)
	}
}

func TestMaxMessageRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 512 MiB")
	}
	// Exactly MaxMessage bytes of parts and then one more byte: refused
	// once the sum passes MaxMessage, before the final frame.
	r := &partsReader{n: MaxMessage / MaxFrame}
	c := newConn(struct {
		io.Reader
		io.Writer
	}{r, io.Discard})
	_, _, err := c.readMsg()
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), fmt.Sprintf("exceeds %d bytes", MaxMessage)) {
		t.Fatalf("MaxMessage of parts plus 2 bytes: %v", err)
	}
	if !r.done {
		t.Error("refused before the last frame")
	}
}

// bodyStream encodes a body by hand: header, data frames, end.
func bodyStream(i int, size int64, chunks ...[]byte) []byte {
	h, _ := json.Marshal(bodyHdr{I: i, Size: size})
	out := rawFrame(fBody, h)
	for _, c := range chunks {
		out = append(out, rawFrame(fData, c)...)
	}
	return append(out, rawFrame(fEnd, nil)...)
}

func TestBodyRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3*ChunkSize + 17} {
		body := pattern(n)
		var buf bytes.Buffer
		w := writeConn(&buf)
		if err := w.writeBody(3, int64(n), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		w.flush()
		if want := 2 + (n+ChunkSize-1)/ChunkSize; w.FramesOut != int64(want) {
			t.Errorf("%d bytes in %d frames, want %d", n, w.FramesOut, want)
		}
		r := readerConn(buf.Bytes(), io.Discard)
		refs := make([]replica.BodyRef, 4)
		refs[3].Size = int64(n)
		var got []byte
		buf.Write(rawFrame(fReply, []byte("{}")))
		r = readerConn(buf.Bytes(), io.Discard)
		err := receiveBodies(r, refs, func(i int, rd io.Reader) error {
			if i != 3 {
				t.Errorf("body index %d", i)
			}
			var err error
			got, err = io.ReadAll(rd)
			return err
		})
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%d bytes: got %d bytes back, %v", n, len(got), err)
		}
	}
}

func TestBodyLengthMismatch(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"longer", bodyStream(0, 10, pattern(11)), "longer than announced"},
		{"longer in the second chunk", bodyStream(0, 10, pattern(6), pattern(6)), "longer than announced"},
		{"shorter", bodyStream(0, 10, pattern(4)), "shorter than announced (6 bytes missing)"},
		{"empty", bodyStream(0, 10), "shorter than announced (10 bytes missing)"},
		{"a message inside", append(bodyStream(0, 10, pattern(5))[:len(bodyStream(0, 10, pattern(5)))-5], rawFrame(fReply, []byte("{}"))...), "unexpected frame 'R' inside a body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(append([]byte(nil), tt.in...), rawFrame(fReply, []byte("{}"))...)
			c := readerConn(in, io.Discard)
			called := false
			var readErr error
			err := receiveBodies(c, []replica.BodyRef{{GUID: "m1", Size: 10}}, func(i int, rd io.Reader) error {
				called = true
				_, readErr = io.ReadAll(rd)
				return readErr
			})
			if !called {
				t.Fatal("the body never reached fn")
			}
			for _, e := range []error{readErr, err} {
				if !errors.Is(e, ErrProtocol) || !strings.Contains(e.Error(), tt.want) {
					t.Errorf("got %v, want a protocol error %q", e, tt.want)
				}
			}
		})
	}
}

func TestBodyHeaderChecks(t *testing.T) {
	refs := []replica.BodyRef{{GUID: "m0", Size: 3}, {GUID: "m1", Size: 4}}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"index out of range", bodyStream(2, 3, pattern(3)), "body header 2/2"},
		{"negative index", bodyStream(-1, 3, pattern(3)), "body header -1/2"},
		{"negative size", bodyStream(0, -3), "of -3 bytes"},
		{"size not asked for", bodyStream(0, 1<<40, pattern(3)), "body 0/2 (message m0) announced as 1099511627776 bytes, 3 were asked for"},
		{"twice", append(bodyStream(1, 4, pattern(4)), bodyStream(1, 4, pattern(4))...), "body 1/2 (message m1) sent twice"},
		{"bad header", append(rawFrame(fBody, []byte(`{"i":"x"}`)), rawFrame(fEnd, nil)...), "body header: json"},
		{"data without header", rawFrame(fData, pattern(3)), "unexpected frame 'D'"},
		{"request", rawFrame(fRequest, []byte(`{"op":"begin"}`)), "fetch: unexpected frame 'Q'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(append([]byte(nil), tt.in...), rawFrame(fReply, []byte("{}"))...)
			c := readerConn(in, io.Discard)
			n := 0
			err := receiveBodies(c, refs, func(i int, rd io.Reader) error {
				n++
				_, err := io.Copy(io.Discard, rd)
				return err
			})
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a protocol error %q", err, tt.want)
			}
			if tt.name == "twice" && n != 1 {
				t.Errorf("fn called %d times", n)
			}
		})
	}
	// The peer's error frame ends the batch as a PeerError.
	c := readerConn(rawFrame(fError, []byte(`{"message":"disk on fire"}`)), io.Discard)
	err := receiveBodies(c, refs, func(int, io.Reader) error { return nil })
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Msg != "disk on fire" {
		t.Errorf("error frame: %v", err)
	}
}

func TestWriteBodySourceShort(t *testing.T) {
	var buf bytes.Buffer
	w := writeConn(&buf)
	err := w.writeBody(0, 100, bytes.NewReader(pattern(40)))
	if err == nil || !strings.Contains(err.Error(), "60 bytes early") {
		t.Fatalf("writeBody of a short source: %v", err)
	}
	// What went out is not a complete body: the receiver cannot mistake it
	// for one.
	w.flush()
	c := readerConn(buf.Bytes(), io.Discard)
	err = receiveBodies(c, []replica.BodyRef{{Size: 100}}, func(i int, rd io.Reader) error {
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	if err == nil {
		t.Fatal("a body cut short by its sender was received whole")
	}
}

// A stream cut anywhere is an error (never a hang, never a short message
// or body taken for a whole one).
func TestTruncatedStreams(t *testing.T) {
	var buf bytes.Buffer
	w := writeConn(&buf)
	if err := w.writeMsg(fRequest, bigMsg{Op: "apply", Data: strings.Repeat("y", MaxFrame+100)}); err != nil {
		t.Fatal(err)
	}
	msgEnd := buf.Len()
	if err := w.writeBody(0, 2*ChunkSize+5, bytes.NewReader(pattern(2*ChunkSize+5))); err != nil {
		t.Fatal(err)
	}
	if err := w.writeMsg(fReply, struct{}{}); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	frameEnds := map[int]bool{}
	for off := 0; off < len(full); {
		n := int(binary.BigEndian.Uint32(full[off+1:]))
		off += 5 + n
		frameEnds[off] = true
	}
	refs := []replica.BodyRef{{Size: 2*ChunkSize + 5}}
	// Every cut point near a frame boundary, and a sample of the others.
	var cuts []int
	for off := range frameEnds {
		for d := -6; d <= 6; d++ {
			if off+d > 0 && off+d < len(full) {
				cuts = append(cuts, off+d)
			}
		}
	}
	for off := 1; off < len(full); off += 997 {
		cuts = append(cuts, off)
	}
	for _, cut := range cuts {
		c := readerConn(full[:cut], io.Discard)
		_, _, err := c.readMsg()
		if cut < msgEnd {
			if err == nil || err == io.EOF {
				t.Fatalf("message cut at %d of %d: %v", cut, msgEnd, err)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("message cut at %d: %v does not wrap io.ErrUnexpectedEOF", cut, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("whole message, cut at %d: %v", cut, err)
		}
		var got int64
		err = receiveBodies(c, refs, func(i int, rd io.Reader) error {
			n, err := io.Copy(io.Discard, rd)
			got = n
			return err
		})
		if err == nil || err == io.EOF {
			t.Fatalf("stream cut at %d of %d: %v (body %d bytes)", cut, len(full), err, got)
		}
	}
	// The whole stream reads without error.
	c := readerConn(full, io.Discard)
	if _, _, err := c.readMsg(); err != nil {
		t.Fatal(err)
	}
	if err := receiveBodies(c, refs, func(i int, rd io.Reader) error { _, err := io.Copy(io.Discard, rd); return err }); err != nil {
		t.Fatal(err)
	}
}

// A body cut at a frame boundary must fail its reader, not end it cleanly:
// io.Copy would take io.EOF for the end of a whole body.
func TestBodyReaderCutBetweenFrames(t *testing.T) {
	in := bodyStream(0, 10, pattern(4))
	in = in[:len(in)-5] // drop the 'Z'
	c := readerConn(in, io.Discard)
	if _, _, err := c.readMsg(); err != nil {
		t.Fatal(err)
	}
	br := &bodyReader{c: c, left: 10}
	n, err := io.Copy(io.Discard, br)
	if err == nil {
		t.Fatalf("read %d of 10 bytes and then a clean end", n)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("%v does not wrap io.ErrUnexpectedEOF", err)
	}
}
