package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/twinbox-mail/twinbox/sync/replica"
)

// The fuzz targets check properties, not just the absence of panics. Run
// one with: go test -run='^$' -fuzz='^FuzzReadFrame$' -fuzztime=75s ./wire/
// Inputs worth keeping live in testdata/fuzz/<target>/.

func seedStreams() [][]byte {
	var buf bytes.Buffer
	w := writeConn(&buf)
	w.writeMsg(fHello, hello{Proto: "twinbox", Min: 1, Max: 1, User: "u"})
	w.writeMsg(fRequest, request{Op: "fetch", Args: json.RawMessage(`[{"box":"00000000000000000000000000000000","uid":1,"guid":"g","size":3}]`)})
	w.writeBody(0, 3, bytes.NewReader([]byte("abc")))
	w.writeMsg(fChunk, map[string]any{"box": 0, "adds": []int{}})
	w.writeMsg(fReply, struct{}{})
	w.writeMsg(fError, errorMsg{Message: "no"})
	w.flush()
	one := append([]byte(nil), buf.Bytes()...)
	return [][]byte{
		one,
		nil,
		rawFrame(fRequest, []byte(`{"op":"begin"}`)),
		append(rawFrame(fPart, []byte(`{"op":"beg`)), rawFrame(fRequest, []byte(`in"}`))...),
		rawHeader(fRequest, MaxFrame+1),
		rawHeader(fData, MaxFrame),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		bodyStream(0, 3, []byte("abcd")),
		bodyStream(0, 3, []byte("ab")),
		append(bodyStream(0, 3, []byte("abc")), bodyStream(0, 3, []byte("abc"))...),
	}
}

func isType(t byte, types ...byte) bool {
	for _, x := range types {
		if t == x {
			return true
		}
	}
	return false
}

// FuzzReadFrame: any bytes give well-formed frames or an error; what is
// read re-encodes to exactly the bytes consumed; no buffer exceeds a frame.
func FuzzReadFrame(f *testing.F) {
	for _, s := range seedStreams() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := readerConn(data, io.Discard)
		var again []byte
		for i := 0; ; i++ {
			ft, p, err := c.readFrame()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("frame %d: error %v is neither io.EOF nor a protocol error", i, err)
				}
				if err == io.EOF && len(again) != len(data) {
					t.Fatalf("clean end after %d of %d bytes", len(again), len(data))
				}
				break
			}
			if !isType(ft, frameTypes...) {
				t.Fatalf("frame %d of unknown type %q accepted", i, ft)
			}
			if len(p) > MaxFrame {
				t.Fatalf("frame %d of %d bytes", i, len(p))
			}
			again = append(again, rawFrame(ft, p)...)
			if !bytes.HasPrefix(data, again) {
				t.Fatalf("frame %d does not re-encode to the bytes read", i)
			}
		}
		if cap(c.buf) > MaxFrame {
			t.Fatalf("frame buffer of %d bytes", cap(c.buf))
		}
		if int(c.FramesIn)*5 > len(data) || c.BytesIn != int64(len(again)) {
			t.Fatalf("counters: %d frames %d bytes, %d bytes re-encoded", c.FramesIn, c.BytesIn, len(again))
		}
	})
}

// FuzzReadMsg: messages and bodies from any bytes. A message is one of the
// message types and within its limit; a body read without error has exactly
// the announced size; receiveBodies hands fn at most one reader per
// requested body, each yielding exactly the requested size or an error.
func FuzzReadMsg(f *testing.F) {
	for _, s := range seedStreams() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// As a stream of messages and bodies, with a small message limit.
		const limit = 3 * MaxFrame / 2
		c := readerConn(data, io.Discard)
		for i := 0; ; i++ {
			ft, b, err := c.readMsgLimit(limit)
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("message %d: error %v", i, err)
				}
				break
			}
			if !isType(ft, fHello, fRequest, fReply, fError, fBody, fChunk) {
				t.Fatalf("message %d of type %q", i, ft)
			}
			if len(b) > limit {
				t.Fatalf("message %d of %d bytes, limit %d", i, len(b), limit)
			}
			if ft != fBody {
				continue
			}
			var h bodyHdr
			if json.Unmarshal(b, &h) != nil || h.Size < 0 {
				continue
			}
			br := &bodyReader{c: c, left: h.Size}
			n, err := io.Copy(io.Discard, br)
			if err == nil && n != h.Size {
				t.Fatalf("body of %d bytes read whole as %d bytes", h.Size, n)
			}
			if err != nil {
				break
			}
		}

		// As the reply to a fetch of three bodies.
		refs := []replica.BodyRef{{GUID: "a", Size: 0}, {GUID: "b", Size: 3}, {GUID: "c", Size: 70000}}
		seen := make([]bool, len(refs))
		c = readerConn(data, io.Discard)
		err := receiveBodies(c, refs, func(i int, r io.Reader) error {
			if i < 0 || i >= len(refs) || seen[i] {
				t.Fatalf("fn called for body %d (seen %v)", i, seen)
			}
			seen[i] = true
			n, err := io.Copy(io.Discard, r)
			if err == nil && n != refs[i].Size {
				t.Fatalf("body %d: %d bytes read whole, %d asked for", i, n, refs[i].Size)
			}
			return err
		})
		var pe *PeerError
		if err != nil && !errors.Is(err, ErrProtocol) && !errors.As(err, &pe) {
			t.Fatalf("receiveBodies: %v is neither a protocol nor a peer error", err)
		}
	})
}
