package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/twinbox-mail/twinbox/internal/jsonfast"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// Client is a replica on the far side of a connection.
type Client struct {
	c    *conn
	rw   io.ReadWriteCloser
	info replica.Info
	peer *Node
	// Name names the peer in errors (default: its replica ID), for
	// example "remote:vmail@mx2 (user bob)".
	Name   string
	closed atomic.Bool
	stop   func() bool
	// RoundTrips counts requests this client sent (each one waits for its
	// reply; a sync needs the same number whatever the mailbox sizes).
	RoundTrips int
}

var _ replica.Replica = (*Client)(nil)

// Dial runs the handshake on rw (already connected) for user, presenting
// self, and opens the server's replica. Cancelling ctx closes rw, which
// ends any call in progress.
func Dial(ctx context.Context, rw io.ReadWriteCloser, user string, self replica.Info) (*Client, error) {
	cl, err := Handshake(ctx, rw, user, nil)
	if err != nil {
		return nil, err
	}
	if err := cl.Open(ctx, self); err != nil {
		cl.abort()
		return nil, err
	}
	return cl, nil
}

// Handshake runs the handshake on rw for user, saying where this side's
// replica lives (self may be nil), and returns a client whose server has
// not yet opened (nor locked) the replica: see Peer and Open.
func Handshake(ctx context.Context, rw io.ReadWriteCloser, user string, self *Node) (*Client, error) {
	cl := &Client{c: newConn(rw), rw: rw}
	cl.stop = context.AfterFunc(ctx, func() { rw.Close() })
	if err := cl.c.writeMsg(fHello, hello{Proto: "twinbox", Min: Version, Max: Version, User: user, Node: self}); err != nil {
		cl.abort()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	t, b, err := cl.c.readMsgLimit(maxHello)
	if err != nil {
		cl.abort()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if t != fHello {
		cl.abort()
		if t == fError {
			return nil, fmt.Errorf("peer refused: %s", errText(b))
		}
		return nil, protoErr("handshake: got frame %q", t)
	}
	var h hello
	if err := json.Unmarshal(b, &h); err != nil {
		cl.abort()
		return nil, protoErr("handshake: %v", err)
	}
	if h.Error != "" {
		cl.abort()
		return nil, fmt.Errorf("peer refused: %s", h.Error)
	}
	if h.Proto != "twinbox" || h.Min > Version || h.Max < Version {
		err := protoErr("peer speaks %q versions %d-%d, this build %d", h.Proto, h.Min, h.Max, Version)
		// Tell the server why we hang up, so that its log says so too.
		_ = cl.c.writeMsg(fError, errorMsg{Message: fmt.Sprintf("client refused: this client speaks twinbox protocol version %d, the server %q %d-%d", Version, h.Proto, h.Min, h.Max)})
		cl.abort()
		return nil, err
	}
	cl.peer = h.Node
	return cl, nil
}

func (cl *Client) name() string {
	if cl.Name != "" {
		return cl.Name
	}
	return cl.info.ReplicaID
}

// Peer is where the server's replica lives, if the server said so.
func (cl *Client) Peer() *Node { return cl.peer }

// Open asks the server to open (and lock) its replica, presenting self.
func (cl *Client) Open(ctx context.Context, self replica.Info) error {
	var info replica.Info
	if err := cl.call("open", self, &info); err != nil {
		var pe *PeerError
		if errors.As(err, &pe) {
			return fmt.Errorf("peer refused: %s", pe.Msg)
		}
		return err
	}
	cl.info = info
	return nil
}

// Abort drops the connection without a goodbye.
func (cl *Client) Abort() { cl.abort() }

func errText(b []byte) string {
	var e errorMsg
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		return e.Message
	}
	return string(b)
}

func (cl *Client) abort() {
	cl.closed.Store(true)
	cl.stop()
	cl.rw.Close()
}

// Info is the server's replica identity from the handshake.
func (cl *Client) Info() replica.Info { return cl.info }

// Counters reports frames and bytes each way.
func (cl *Client) Counters() (framesIn, framesOut, bytesIn, bytesOut int64) {
	return cl.c.FramesIn, cl.c.FramesOut, cl.c.BytesIn, cl.c.BytesOut
}

func (cl *Client) send(op string, args any) error {
	var raw []byte
	if a, ok := args.(applyRequest); ok {
		// A no-change sync's plan (an entry per mailbox) without
		// reflection: the same bytes.
		raw, _ = appendApplyFast(nil, &a)
	}
	if raw == nil {
		var err error
		if raw, err = json.Marshal(args); err != nil {
			return err
		}
	}
	cl.RoundTrips++
	return cl.c.writeMsg(fRequest, request{Op: op, Args: raw})
}

// reply waits for the reply of the current call.
func (cl *Client) reply(op string, out any) error {
	t, b, err := cl.c.readMsg()
	if err != nil {
		return fmt.Errorf("peer %s: %s: %w", cl.info.ReplicaID, op, err)
	}
	switch t {
	case fReply:
		if out == nil || decodeFast(b, out) {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return protoErr("%s reply: %v", op, err)
		}
		return nil
	case fError:
		return &PeerError{Op: op, Msg: errText(b)}
	default:
		return protoErr("%s: unexpected frame %q", op, t)
	}
}

// decodeFast decodes the replies that grow with the number of mailboxes
// (begin, apply) without json.Unmarshal where it can (package jsonfast:
// what json.Marshal writes, with the result json.Unmarshal would give),
// which a no-change sync of many mailboxes otherwise spends most of its
// wire time on. It reports false, out untouched, for anything else.
func decodeFast(b []byte, out any) bool {
	switch o := out.(type) {
	case *replica.BeginReply:
		var r replica.BeginReply
		if jsonfast.BeginReply(b, &r) {
			*o = r
			return true
		}
	case *replica.ApplyResult:
		var r replica.ApplyResult
		if jsonfast.ApplyResult(b, &r) {
			*o = r
			return true
		}
	}
	return false
}

// PeerError is an error the peer reported.
type PeerError struct{ Op, Msg string }

func (e *PeerError) Error() string { return fmt.Sprintf("peer: %s", e.Msg) }

func (cl *Client) call(op string, args, out any) error {
	if err := cl.send(op, args); err != nil {
		return fmt.Errorf("peer %s: %s: %w", cl.info.ReplicaID, op, err)
	}
	return cl.reply(op, out)
}

// Begin asks the server to scan and describe its replica.
func (cl *Client) Begin(ctx context.Context, req replica.BeginRequest) (*replica.BeginReply, error) {
	var out replica.BeginReply
	if err := cl.call("begin", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Changes fetches records; they arrive in chunks of at most chunkRecords.
func (cl *Client) Changes(ctx context.Context, req replica.ChangesRequest) (map[model.MailboxGUID]*merge.Contents, error) {
	if err := cl.send("changes", req); err != nil {
		return nil, fmt.Errorf("peer %s: changes: %w", cl.name(), err)
	}
	out := map[model.MailboxGUID]*merge.Contents{}
	for {
		t, b, err := cl.c.readMsg()
		if err != nil {
			return nil, fmt.Errorf("peer %s: changes: %w", cl.name(), err)
		}
		switch t {
		case fChunk:
			var ch changesChunk
			if !jsonfast.EmptyChunk(b, &ch.GUID) {
				ch = changesChunk{}
				if err := json.Unmarshal(b, &ch); err != nil {
					return nil, protoErr("changes chunk: %v", err)
				}
			}
			c := out[ch.GUID]
			if c == nil {
				c = &merge.Contents{}
				out[ch.GUID] = c
			}
			c.Messages = append(c.Messages, ch.Messages...)
			c.Tombstones = append(c.Tombstones, ch.Tombstones...)
		case fReply:
			return out, nil
		case fError:
			return nil, &PeerError{Op: "changes", Msg: errText(b)}
		default:
			return nil, protoErr("changes: unexpected frame %q", t)
		}
	}
}

// changesChunk carries part of one mailbox's records.
type changesChunk struct {
	GUID       model.MailboxGUID `json:"guid"`
	Messages   []model.Message   `json:"messages,omitempty"`
	Tombstones []model.Tombstone `json:"tombstones,omitempty"`
}

// writeChanges sends contents as chunks, then the closing reply.
func writeChanges(c *conn, contents map[model.MailboxGUID]*merge.Contents) error {
	for g, ct := range contents {
		msgs, tombs := ct.Messages, ct.Tombstones
		for first := true; first || len(msgs) > 0 || len(tombs) > 0; first = false {
			ch := changesChunk{GUID: g}
			n := min(len(msgs), chunkRecords)
			ch.Messages, msgs = msgs[:n], msgs[n:]
			m := min(len(tombs), chunkRecords-n)
			ch.Tombstones, tombs = tombs[:m], tombs[m:]
			if err := c.bufferMsg(fChunk, ch); err != nil {
				return err
			}
		}
	}
	return c.writeMsg(fReply, struct{}{})
}

// applyRequest is the plan without its adds, which follow in chunks.
type applyRequest struct {
	Plan   merge.SidePlan `json:"plan"`
	Chunks int            `json:"chunks"`
}

// addsArgs asks for the adds of one mailbox of the plan being applied.
type addsArgs struct {
	Box int `json:"box"`
}

// addsChunk carries some adds of one mailbox of the plan.
type addsChunk struct {
	Box  int         `json:"box"`
	Adds []merge.Add `json:"adds"`
}

// readApply reads an apply request and its chunks.
func readApply(c *conn, raw json.RawMessage) (*merge.SidePlan, error) {
	var req applyRequest
	if !decodeApplyFast(raw, &req) {
		req = applyRequest{}
		if err := decode(raw, &req); err != nil {
			return nil, err
		}
	}
	if req.Chunks < 0 || req.Chunks > maxChunks {
		return nil, protoErr("apply announces %d chunks (at most %d)", req.Chunks, maxChunks)
	}
	for i := 0; i < req.Chunks; i++ {
		t, b, err := c.readMsgLimit(maxChunkBytes)
		if err == io.EOF {
			err = truncated(fmt.Sprintf("apply (the stream ended before chunk %d of %d)", i+1, req.Chunks))
		}
		if err != nil {
			return nil, err
		}
		if t != fChunk {
			return nil, protoErr("apply: expected chunk %d of %d, got frame %q", i+1, req.Chunks, t)
		}
		var ch addsChunk
		if err := json.Unmarshal(b, &ch); err != nil {
			return nil, protoErr("apply chunk: %v", err)
		}
		if len(ch.Adds) > chunkRecords {
			return nil, protoErr("apply chunk of %d adds (at most %d)", len(ch.Adds), chunkRecords)
		}
		if ch.Box < 0 || ch.Box >= len(req.Plan.Boxes) {
			return nil, protoErr("apply chunk for mailbox %d of %d", ch.Box, len(req.Plan.Boxes))
		}
		req.Plan.Boxes[ch.Box].Adds = append(req.Plan.Boxes[ch.Box].Adds, ch.Adds...)
	}
	return &req.Plan, nil
}

// Apply sends the plan; while the server applies it, it fetches the bodies
// it lacks from src through this connection.
func (cl *Client) Apply(ctx context.Context, plan *merge.SidePlan, src replica.BodySource) (*replica.ApplyResult, error) {
	// The plan goes without its adds; the server pulls them mailbox by
	// mailbox ("adds" requests), so neither side holds a large first sync
	// whole, and this side lets each mailbox's adds go once sent.
	req := applyRequest{Plan: *plan}
	req.Plan.Boxes = append([]merge.BoxPlan(nil), plan.Boxes...)
	for i := range req.Plan.Boxes {
		req.Plan.Boxes[i].AddCount = len(req.Plan.Boxes[i].Adds)
		req.Plan.Boxes[i].Adds = nil
	}
	if err := cl.send("apply", req); err != nil {
		return nil, fmt.Errorf("peer %s: apply: %w", cl.name(), err)
	}
	var srcErr error // src failed (and the peer was told)
	for {
		t, b, err := cl.c.readMsg()
		if err != nil {
			return nil, fmt.Errorf("peer %s: apply: %w", cl.name(), err)
		}
		switch t {
		case fReply:
			var out replica.ApplyResult
			if !decodeFast(b, &out) {
				if err := json.Unmarshal(b, &out); err != nil {
					return nil, protoErr("apply reply: %v", err)
				}
			}
			if srcErr != nil {
				return &out, fmt.Errorf("peer %s: apply: sending bodies: %w", cl.name(), srcErr)
			}
			return &out, nil
		case fError:
			return nil, &PeerError{Op: "apply", Msg: errText(b)}
		case fRequest:
			var rq request
			if err := json.Unmarshal(b, &rq); err != nil || (rq.Op != "fetch" && rq.Op != "adds") {
				return nil, protoErr("apply: peer sent request %q", rq.Op)
			}
			if rq.Op == "adds" {
				var a addsArgs
				if err := json.Unmarshal(rq.Args, &a); err != nil || a.Box < 0 || a.Box >= len(plan.Boxes) {
					return nil, protoErr("adds request for mailbox %d of %d", a.Box, len(plan.Boxes))
				}
				adds := plan.Boxes[a.Box].Adds
				for len(adds) > 0 {
					n := min(len(adds), chunkRecords)
					if err := cl.c.writeMsg(fChunk, addsChunk{Box: a.Box, Adds: adds[:n]}); err != nil {
						return nil, fmt.Errorf("peer %s: apply: %w", cl.name(), err)
					}
					adds = adds[n:]
				}
				plan.Boxes[a.Box].Adds = nil
				if err := cl.c.writeMsg(fReply, struct{}{}); err != nil {
					return nil, fmt.Errorf("peer %s: apply: %w", cl.name(), err)
				}
				continue
			}
			var refs []replica.BodyRef
			if err := json.Unmarshal(rq.Args, &refs); err != nil {
				return nil, protoErr("fetch request: %v", err)
			}
			if err := serveBodies(ctx, cl.c, src, refs); err != nil {
				var se *sourceError
				if !errors.As(err, &se) {
					return nil, fmt.Errorf("peer %s: apply: sending bodies: %w", cl.name(), err)
				}
				// The peer was told and answers the apply: read that
				// answer, or the next call would take it for its own.
				if srcErr == nil {
					srcErr = se.err
				}
			}
		default:
			return nil, protoErr("apply: unexpected frame %q", t)
		}
	}
}

// sourceError is a failure of a body source that the peer was told of in
// an error frame: unlike other errors of serveBodies, it leaves the stream
// in step.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// serveBodies streams the bodies of refs from src, then a reply; a failure
// of src is reported to the peer as an error frame and returned as a
// *sourceError. Any other error leaves the stream broken.
func serveBodies(ctx context.Context, c *conn, src replica.BodySource, refs []replica.BodyRef) error {
	var werr error
	err := src.Fetch(ctx, refs, func(i int, r io.Reader) error {
		if i < 0 || i >= len(refs) {
			return fmt.Errorf("body index %d out of range", i)
		}
		werr = c.writeBody(i, refs[i].Size, r)
		return werr
	})
	if werr != nil {
		return werr // the stream is broken mid-body: nothing more to say
	}
	if err != nil {
		if werr := c.writeMsg(fError, errorMsg{Message: err.Error()}); werr != nil {
			return werr
		}
		return &sourceError{err}
	}
	return c.writeMsg(fReply, struct{}{})
}

// Fetch streams bodies from the server.
func (cl *Client) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	if err := cl.send("fetch", refs); err != nil {
		return fmt.Errorf("peer %s: fetch: %w", cl.name(), err)
	}
	return receiveBodies(cl.c, refs, fn)
}

// receiveBodies reads the bodies of refs until the closing reply. A body
// must be one that was asked for, at most once, and of the size asked for:
// a peer cannot make the receiver take more bytes than it expects.
func receiveBodies(c *conn, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	n := len(refs)
	seen := make([]bool, n)
	for {
		t, b, err := c.readMsg()
		if err == io.EOF {
			err = truncated("fetch (the stream ended before its reply)")
		}
		if err != nil {
			return err
		}
		switch t {
		case fReply:
			return nil
		case fError:
			return &PeerError{Op: "fetch", Msg: errText(b)}
		case fBody:
			var h bodyHdr
			if err := json.Unmarshal(b, &h); err != nil {
				return protoErr("body header: %v", err)
			}
			if h.I < 0 || h.I >= n || h.Size < 0 {
				return protoErr("body header %d/%d of %d bytes", h.I, n, h.Size)
			}
			if seen[h.I] {
				return protoErr("body %d/%d (message %s) sent twice", h.I, n, refs[h.I].GUID)
			}
			seen[h.I] = true
			if h.Size != refs[h.I].Size {
				return protoErr("body %d/%d (message %s) announced as %d bytes, %d were asked for", h.I, n, refs[h.I].GUID, h.Size, refs[h.I].Size)
			}
			br := &bodyReader{c: c, left: h.Size}
			if err := fn(h.I, br); err != nil {
				return err
			}
			if err := br.drain(); err != nil {
				return err
			}
		default:
			return protoErr("fetch: unexpected frame %q", t)
		}
	}
}

// Commit records the sync on the server.
func (cl *Client) Commit(ctx context.Context, req replica.CommitRequest) error {
	return cl.call("commit", req, nil)
}

// Close ends the session: the server releases its replica.
func (cl *Client) Close() error {
	if cl.closed.Swap(true) {
		return nil
	}
	err := cl.call("close", struct{}{}, nil)
	cl.stop()
	if cerr := cl.rw.Close(); err == nil {
		err = cerr
	}
	return err
}
