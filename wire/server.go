package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// Opener opens (and locks) the replica of user for a connecting peer. Its
// error is sent to the peer, so it must not reveal more than the peer may
// know.
type Opener func(ctx context.Context, user string, peer replica.Info) (replica.Replica, error)

// Server is the serving side of the protocol for one connection.
type Server struct {
	// Open opens (and locks) the replica; it is called at the client's
	// "open" request, or at its first request if it sends none.
	Open Opener
	// Node, if set, says where user's replica lives before it is opened;
	// the client uses it to take the two replicas' locks in order.
	Node func(user string) (Node, error)
	Log  *slog.Logger
}

// Serve speaks the protocol on rw until the peer closes the session or the
// stream ends. It never panics on bad input: a malformed frame ends the
// session with an error, which the peer is told of when it can still listen.
//
// Requests must come in the order of a sync (replica.Replica): "open"
// (optional), "begin", "changes" before "apply", "apply" before "commit";
// "fetch" after "begin". A request out of order is a protocol error.
func Serve(ctx context.Context, rw io.ReadWriter, open Opener, log *slog.Logger) error {
	return (&Server{Open: open, Log: log}).Serve(ctx, rw)
}

// Serve runs one session on rw (see the function Serve).
func (s *Server) Serve(ctx context.Context, rw io.ReadWriter) (err error) {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := newConn(rw)
	t, b, err := c.readMsgLimit(maxHello)
	if err != nil {
		if errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
			_ = c.writeMsg(fError, errorMsg{Message: "handshake: " + err.Error()})
		}
		return fmt.Errorf("handshake: %w", err)
	}
	if t != fHello {
		err := protoErr("handshake: got frame %q, want a hello", t)
		_ = c.writeMsg(fError, errorMsg{Message: err.Error()})
		return err
	}
	var h struct {
		hello
		Replica replica.Info `json:"replica"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		err := protoErr("handshake: %v", err)
		_ = c.writeMsg(fError, errorMsg{Message: err.Error()})
		return err
	}
	if h.Proto != "twinbox" || h.Min > Version || h.Max < Version {
		msg := fmt.Sprintf("this server speaks twinbox protocol version %d, the client %q %d-%d", Version, h.Proto, h.Min, h.Max)
		_ = c.writeMsg(fHello, hello{Proto: "twinbox", Min: Version, Max: Version, Error: msg})
		return protoErr("%s", msg)
	}
	var node *Node
	if s.Node != nil {
		n, err := s.Node(h.User)
		if err != nil {
			_ = c.writeMsg(fHello, hello{Proto: "twinbox", Min: Version, Max: Version, Error: err.Error()})
			return err
		}
		node = &n
	}
	if err := c.writeMsg(fHello, hello{Proto: "twinbox", Min: Version, Max: Version, Node: node}); err != nil {
		return err
	}
	log = log.With("user", h.User)
	var rep replica.Replica
	defer func() {
		if rep == nil {
			return
		}
		if cerr := rep.Close(); err == nil {
			err = cerr
		}
	}()
	open := func(peer replica.Info) error {
		r, err := s.Open(ctx, h.User, peer)
		if err != nil {
			log.Warn("open failed", "peer", peer.ReplicaID, "err", err)
			return err
		}
		rep = r
		log = log.With("peer", peer.ReplicaID)
		return nil
	}
	cb := &callback{c: c}
	// What the session has done so far, for the order of requests.
	var begun, changed, applied bool
	// refuse ends the session on a protocol error, telling the peer if it
	// is still there (not after a stream that ended or failed: on stdout a
	// write to a closed pipe is a SIGPIPE).
	refuse := func(err error) error {
		log.Warn("protocol error", "err", err)
		if errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
			_ = c.writeMsg(fError, errorMsg{Message: err.Error()})
		}
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, b, err := c.readMsg()
		if errors.Is(err, io.EOF) {
			return nil // the peer went away; the next sync converges
		}
		if err != nil {
			return refuse(err)
		}
		if t == fError {
			return fmt.Errorf("peer gave up: %s", errText(b))
		}
		if t != fRequest {
			return refuse(protoErr("expected a request, got frame %q", t))
		}
		var rq request
		if err := json.Unmarshal(b, &rq); err != nil {
			return refuse(protoErr("request: %v", err))
		}
		var out any
		var callErr error
		if rq.Op == "open" {
			if rep != nil {
				return refuse(protoErr("request \"open\" twice"))
			}
			var peer replica.Info
			if err := decode(rq.Args, &peer); err != nil {
				return refuse(err)
			}
			if err := open(peer); err != nil {
				_ = c.writeMsg(fError, errorMsg{Message: err.Error()})
				return err
			}
			if err := c.writeMsg(fReply, rep.Info()); err != nil {
				return err
			}
			continue
		}
		if rep == nil && rq.Op != "close" {
			// A client that does not care for lock order opens at its
			// first request.
			if err := open(h.Replica); err != nil {
				_ = c.writeMsg(fError, errorMsg{Message: err.Error()})
				return err
			}
		}
		switch {
		case rq.Op == "close":
		case rq.Op != "begin" && !begun:
			return refuse(protoErr("request %q before \"begin\"", rq.Op))
		case rq.Op == "apply" && !changed:
			return refuse(protoErr("request \"apply\" before \"changes\""))
		case rq.Op == "commit" && !applied:
			return refuse(protoErr("request \"commit\" before \"apply\""))
		}
		switch rq.Op {
		case "begin":
			var a replica.BeginRequest
			if callErr = decode(rq.Args, &a); callErr == nil {
				out, callErr = rep.Begin(ctx, a)
				begun = begun || callErr == nil
			}
		case "changes":
			var a replica.ChangesRequest
			if callErr = decode(rq.Args, &a); callErr == nil {
				var ch map[model.MailboxGUID]*merge.Contents
				if ch, callErr = rep.Changes(ctx, a); callErr == nil {
					changed = true
					if err := writeChanges(c, ch); err != nil {
						return err
					}
					continue
				}
			}
		case "apply":
			// The adds follow the request in chunks: read them all even
			// when the request is bad, or say so and end the session.
			a, err := readApply(c, rq.Args)
			if err != nil {
				return refuse(err)
			}
			{
				out, callErr = rep.Apply(ctx, a, cb)
				if cb.broken != nil {
					// The body stream is out of step (and the peer may
					// still be writing it): nothing more can be said.
					log.Warn("apply: body stream broken", "err", cb.broken)
					return fmt.Errorf("apply: %w", cb.broken)
				}
				applied = applied || callErr == nil
			}
		case "fetch":
			var refs []replica.BodyRef
			if callErr = decode(rq.Args, &refs); callErr == nil {
				if err := serveBodies(ctx, c, rep, refs); err != nil {
					var se *sourceError
					if !errors.As(err, &se) {
						return err
					}
					// The peer was told; the stream is in step.
					log.Warn("request failed", "op", rq.Op, "err", se.err)
				}
				continue
			}
		case "commit":
			var a replica.CommitRequest
			if callErr = decode(rq.Args, &a); callErr == nil {
				callErr = rep.Commit(ctx, a)
				out = struct{}{}
			}
		case "close":
			return c.writeMsg(fReply, struct{}{})
		default:
			callErr = protoErr("unknown request %q", rq.Op)
		}
		if callErr != nil {
			log.Warn("request failed", "op", rq.Op, "err", callErr)
			if err := c.writeMsg(fError, errorMsg{Message: callErr.Error()}); err != nil {
				return err
			}
			if errors.Is(callErr, ErrProtocol) {
				return callErr
			}
			continue
		}
		if err := c.writeMsg(fReply, out); err != nil {
			return err
		}
	}
}

func decode(raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return protoErr("arguments: %v", err)
	}
	return nil
}

// callback is the client's body source, reached through the connection
// while the server applies a plan.
type callback struct {
	c      *conn
	broken error
}

// maxAdds bounds the adds one mailbox of a plan may bring.
const maxAdds = 10_000_000

// Adds pulls the adds of one mailbox of the plan being applied.
func (cb *callback) Adds(ctx context.Context, box int) ([]merge.Add, error) {
	raw, _ := json.Marshal(addsArgs{Box: box})
	if err := cb.c.writeMsg(fRequest, request{Op: "adds", Args: raw}); err != nil {
		cb.broken = err
		return nil, err
	}
	var out []merge.Add
	for {
		t, b, err := cb.c.readMsgLimit(maxChunkBytes)
		if err == io.EOF {
			err = truncated(fmt.Sprintf("adds of mailbox %d", box))
		}
		if err != nil {
			cb.broken = err
			return nil, err
		}
		switch t {
		case fChunk:
			var ch addsChunk
			if err := json.Unmarshal(b, &ch); err != nil || ch.Box != box || len(ch.Adds) > chunkRecords || len(out)+len(ch.Adds) > maxAdds {
				cb.broken = protoErr("adds chunk for mailbox %d: bad chunk", box)
				return nil, cb.broken
			}
			out = append(out, ch.Adds...)
		case fReply:
			return out, nil
		case fError:
			return nil, &PeerError{Op: "adds", Msg: errText(b)}
		default:
			cb.broken = protoErr("adds: unexpected frame %q", t)
			return nil, cb.broken
		}
	}
}

func (cb *callback) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	raw, err := json.Marshal(refs)
	if err != nil {
		return err
	}
	if err := cb.c.writeMsg(fRequest, request{Op: "fetch", Args: raw}); err != nil {
		cb.broken = err
		return err
	}
	err = receiveBodies(cb.c, refs, fn)
	var pe *PeerError
	if err != nil && !errors.As(err, &pe) {
		cb.broken = err // the stream is out of step: end the session
	}
	return err
}
