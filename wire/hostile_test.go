package wire_test

// A hostile or broken client against wire.Serve backed by a real replica.
// Whatever the client sends, the server answers with an error that names
// the problem (and the user and mailbox where it knows them) or ends the
// session; it never panics, and nothing changes outside the replica's root
// (nor inside it beyond what a legitimate sync writes).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/wire"
)

const user = "alice"

var (
	inboxGUID = guid(0x10)
	workGUID  = guid(0x20)
)

// serverFixture is the server's replica: INBOX with two messages, Work
// with one (Maildir++); INBOX only under LAYOUT=fs.
func serverFixture(layout maildir.Layout) []fixBox {
	boxes := []fixBox{{Name: "INBOX", GUID: inboxGUID, UIDValidity: 1000, Msgs: []fixMsg{
		{UID: 1, Base: "1700000001.M1P1.fixture", Flags: "S", Body: "one"},
		{UID: 2, Base: "1700000002.M2P1.fixture", Body: "two"},
	}}}
	if layout == maildir.LayoutMaildirPP {
		boxes = append(boxes, fixBox{Name: "Work", GUID: workGUID, UIDValidity: 2000, Msgs: []fixMsg{
			{UID: 1, Base: "1700000003.M3P1.fixture", Flags: "FS", Body: "three"},
		}})
	}
	return boxes
}

// env is a server replica in parent/root, with things next to it that
// must never change, and a client connected to it.
type env struct {
	t       *testing.T
	ctx     context.Context
	parent  string
	root    string
	loc     maildir.Location
	outside map[string]string // snapshot of parent, root excluded
	srv     *server
	conn    io.ReadWriteCloser // the client's end (maybe through a mutator)
}

func newEnv(t *testing.T, layout maildir.Layout) *env {
	t.Helper()
	e := &env{t: t, ctx: context.Background(), parent: t.TempDir()}
	e.root = filepath.Join(e.parent, "root")
	e.loc = maildir.Location{Root: e.root, Layout: layout}
	writeFixture(t, e.root, serverFixture(layout))
	scanOnce(t, e.loc)
	// Bait next to the root: a sibling mailbox-looking directory, a file.
	for _, p := range []string{"victim/cur", "root-sibling/.Work/cur", ".evil/cur"} {
		if err := os.MkdirAll(filepath.Join(e.parent, p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.parent, "victim", "file"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.outside = snapshot(t, e.parent, func(rel string) bool { return rel == "root" }, true)
	e.srv = startServer(t, e.ctx, e.loc)
	e.conn = e.srv.conn
	return e
}

// watchdog closes the connection if the test takes too long, so that a
// server that hangs fails the test instead of blocking it.
func (e *env) watchdog() {
	tm := time.AfterFunc(30*time.Second, func() {
		e.t.Error("watchdog: the exchange hung; closing the connection")
		e.srv.conn.Close()
	})
	e.t.Cleanup(func() { tm.Stop() })
}

var self = replica.Info{ReplicaID: "hostile-client", IndexID: "0123456789abcdef"}

// dial runs the handshake with a real client.
func (e *env) dial() *wire.Client {
	e.t.Helper()
	e.watchdog()
	cl, err := wire.Dial(e.ctx, e.conn, user, self)
	if err != nil {
		e.t.Fatalf("handshake: %v", err)
	}
	return cl
}

// begin runs begin and changes, as a sync does before it applies.
func (e *env) begin(cl *wire.Client) *replica.BeginReply {
	e.t.Helper()
	br, err := cl.Begin(e.ctx, replica.BeginRequest{Peer: self})
	if err != nil {
		e.t.Fatalf("begin: %v", err)
	}
	var req replica.ChangesRequest
	for _, m := range br.Mailboxes {
		req.Boxes = append(req.Boxes, replica.BoxSince{GUID: m.GUID})
	}
	if _, err := cl.Changes(e.ctx, req); err != nil {
		e.t.Fatalf("changes: %v", err)
	}
	return br
}

// finish ends the session and checks that the server ended, and that
// nothing outside the root changed and no temporary file is left.
func (e *env) finish() error {
	e.t.Helper()
	e.conn.Close()
	err := e.srv.wait(e.t)
	if d := snapDiff(e.outside, snapshot(e.t, e.parent, func(rel string) bool { return rel == "root" }, true)); len(d) > 0 {
		e.t.Errorf("files outside the replica's root changed:\n%s", strings.Join(d, "\n"))
	}
	if l := tmpLeftovers(e.t, e.root); len(l) > 0 {
		e.t.Errorf("temporary files left: %v", l)
	}
	return err
}

// rootSnap snapshots the root, its index aside.
func (e *env) rootSnap() map[string]string { return snapshot(e.t, e.root, notIndex, false) }

// unchanged fails the test if the root differs from before.
func (e *env) unchanged(before map[string]string) {
	e.t.Helper()
	if d := snapDiff(before, e.rootSnap()); len(d) > 0 {
		e.t.Errorf("the refused request changed the replica:\n%s", strings.Join(d, "\n"))
	}
}

// wantErr fails the test unless err's text contains every want.
func wantErr(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one containing %q", what, want)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not contain %q", what, err, w)
		}
	}
}

// noBodies is a body source that must not be asked.
type noBodies struct{ t *testing.T }

func (s noBodies) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(int, io.Reader) error) error {
	s.t.Errorf("the server asked for %d bodies for a plan it should have refused", len(refs))
	return errors.New("no bodies here")
}

// badNames are mailbox names that must never become directories. The
// absolute ones point into the test's parent directory.
func badNames(parent string, layout maildir.Layout) []string {
	names := []string{
		"..", "../evil", "a/../../evil", "../../victim", "../root-sibling/Work", "INBOX/../../evil",
		"/abs", "/etc/cron.d/evil", parent + "/evil", parent + "/victim", "evil/", "a//b", ".", "a/./b",
		"a\x00b", "a\nb", "a\rb", "\x7f", "a\u0085b", "a\tb", "\xff\xfe", "a\u2028b\x1b[31m",
		strings.Repeat("x", 300), strings.Repeat("ab/", 400) + "c", "",
	}
	if layout == maildir.LayoutMaildirPP {
		names = append(names, ".evil", "a.b", "..evil", "a/..")
	} else {
		names = append(names, "cur", "a/new", "tmp", "x/.y", ".evil")
	}
	return names
}

// nameInErr is how an error names a mailbox name: quoted, unless it is too
// long or empty to be worth quoting. (JSON carries invalid UTF-8 as U+FFFD:
// the server quotes what it received.)
func nameInErr(n string) string {
	var got string
	b, _ := json.Marshal(n)
	json.Unmarshal(b, &got)
	n = got
	switch {
	case n == "":
		return "mailbox name of 0 bytes"
	case len(n) > 1024:
		return fmt.Sprintf("mailbox name of %d bytes", len(n))
	default:
		return fmt.Sprintf("%q", n)
	}
}

func TestHostileMailboxNames(t *testing.T) {
	for _, layout := range []maildir.Layout{maildir.LayoutMaildirPP, maildir.LayoutFS} {
		t.Run(layout.String(), func(t *testing.T) {
			kinds := []struct {
				kind string
				plan func(name string) merge.SidePlan
			}{
				{"create", func(n string) merge.SidePlan {
					// A good create first: a bad plan is refused whole.
					return merge.SidePlan{Creates: []merge.MailboxOp{
						{GUID: guid(0x70), Name: "Fresh", NameT: 1, UIDValidity: 7},
						{GUID: guid(0x77), Name: n, NameT: 1, UIDValidity: 5},
					}}
				}},
				{"rename", func(n string) merge.SidePlan {
					return merge.SidePlan{Renames: []merge.MailboxOp{{GUID: inboxGUID, Name: n, NameT: 2}}}
				}},
				{"adopt", func(n string) merge.SidePlan {
					return merge.SidePlan{Adopts: []merge.Adopt{{From: inboxGUID, To: guid(0x78), Name: n, NameT: 3, UIDValidity: 6}}}
				}},
				{"rename+create", func(n string) merge.SidePlan {
					return merge.SidePlan{
						Renames: []merge.MailboxOp{{GUID: inboxGUID, Name: "INBOX", NameT: 9}},
						Creates: []merge.MailboxOp{{GUID: guid(0x79), Name: n, NameT: 1, UIDValidity: 5}},
					}
				}},
			}
			if layout == maildir.LayoutMaildirPP {
				kinds = append(kinds, struct {
					kind string
					plan func(name string) merge.SidePlan
				}{"rename Work", func(n string) merge.SidePlan {
					return merge.SidePlan{Renames: []merge.MailboxOp{{GUID: workGUID, Name: n, NameT: 2}}}
				}})
			}
			for _, k := range kinds {
				t.Run(k.kind, func(t *testing.T) {
					e := newEnv(t, layout)
					cl := e.dial()
					e.begin(cl)
					for _, n := range badNames(e.parent, layout) {
						before := e.rootSnap()
						plan := k.plan(n)
						_, err := cl.Apply(e.ctx, &plan, noBodies{t})
						var pe *wire.PeerError
						if !errors.As(err, &pe) {
							t.Fatalf("%q: %v, want the server's error", n, err)
						}
						wantErr(t, fmt.Sprintf("%s %q", k.kind, n), err, "user alice ("+e.root+")", "refusing a plan", nameInErr(n))
						e.unchanged(before)
					}
					// The session is still usable after refused plans.
					if _, err := cl.Begin(e.ctx, replica.BeginRequest{Peer: self}); err != nil {
						t.Errorf("begin after refused plans: %v", err)
					}
					if err := cl.Close(); err != nil {
						t.Errorf("close: %v", err)
					}
					if err := e.finish(); err != nil {
						t.Errorf("server: %v", err)
					}
				})
			}
		})
	}
}

func TestHostileSubscriptions(t *testing.T) {
	e := newEnv(t, maildir.LayoutMaildirPP)
	cl := e.dial()
	e.begin(cl)
	for _, n := range []string{"a\nb", "x\n../../evil", "\x00", "", strings.Repeat("s", 2000)} {
		before := e.rootSnap()
		plan := merge.SidePlan{Subs: []model.Subscription{{Name: "Work", Subscribed: true, T: 5}, {Name: n, Subscribed: true, T: 5}}}
		_, err := cl.Apply(e.ctx, &plan, noBodies{t})
		wantErr(t, fmt.Sprintf("subscription %q", n), err, "user alice", "subscription", nameInErr(n))
		e.unchanged(before)
	}
	// Path-like names are just names: they go into the subscriptions file
	// in the root and nowhere else.
	plan := merge.SidePlan{Subs: []model.Subscription{{Name: "../../victim/file", Subscribed: true, T: 6}, {Name: e.parent + "/evil", Subscribed: true, T: 6}}}
	before := e.rootSnap()
	if _, err := cl.Apply(e.ctx, &plan, noBodies{t}); err != nil {
		t.Logf("path-like subscriptions: %v", err)
	}
	for _, d := range snapDiff(before, e.rootSnap()) {
		if !strings.HasSuffix(d, " subscriptions") && !strings.Contains(d, " subscriptions:") {
			t.Errorf("subscriptions changed more than the subscriptions file: %s", d)
		}
	}
	cl.Close()
	if err := e.finish(); err != nil {
		t.Errorf("server: %v", err)
	}
}

func TestHostileMessageNames(t *testing.T) {
	e := newEnv(t, maildir.LayoutMaildirPP)
	cl := e.dial()
	e.begin(cl)
	add := func(g, base string) merge.Add {
		return merge.Add{Msg: model.Message{UID: 10, GUID: g, Base: base, Size: 10, Mtime: 1e18}, SourceBox: inboxGUID, SourceUID: 1}
	}
	badGUIDs := []string{
		"../evil", "../../victim/file", "a/b", "/abs", e.parent + "/evil", "a\x00b", "a:2,S", ":", "", ".", "..", ".hidden",
		"a b", "a\nb", "a\tb", "\x7f", strings.Repeat("g", 256),
	}
	type tc struct {
		name string
		plan merge.SidePlan
		want []string
	}
	var cases []tc
	for _, g := range badGUIDs {
		q := fmt.Sprintf("%q", g)
		if len(g) == 0 || len(g) > 255 {
			q = fmt.Sprintf("message GUID of %d bytes", len(g))
		}
		cases = append(cases,
			tc{"add GUID " + q, merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, UIDNext: 11, Adds: []merge.Add{add("good-1", ""), add(g, "")}}}}, []string{`mailbox "INBOX"`, q}},
			tc{"add GUID in Work " + q, merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: workGUID, UIDNext: 11, Adds: []merge.Add{add(g, "")}}}}, []string{`mailbox "Work"`, q}},
			tc{"move GUID " + q, merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, Moves: []merge.Move{{GUID: g, From: 1, To: 12}}}}}, []string{`mailbox "INBOX"`, q}},
		)
		if g != "" {
			cases = append(cases, tc{"add base " + q, merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, UIDNext: 11, Adds: []merge.Add{add("good-2", g)}}}}, []string{`mailbox "INBOX"`, "base name", q}})
		}
	}
	cases = append(cases,
		tc{"UID 0", merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, Adds: []merge.Add{{Msg: model.Message{UID: 0, GUID: "g0", Size: 1}}}}}}, []string{`mailbox "INBOX"`, "UID 0"}},
		tc{"negative size", merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, Adds: []merge.Add{{Msg: model.Message{UID: 3, GUID: "g0", Size: -1}}}}}}, []string{`mailbox "INBOX"`, "size -1"}},
		tc{"flag name", merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, Flags: []merge.FlagSet{{UID: 1, GUID: "1700000001.M1P1.fixture", Flags: model.Flags{strings.Repeat("k", 300): {Set: true, T: 1}}}}}}}, []string{`mailbox "INBOX"`, "flag name of 300 bytes"}},
		tc{"unknown mailbox", merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: guid(0x99), UIDNext: 11, Adds: []merge.Add{add("good-3", "")}}}}, []string{guid(0x99).String()}},
	)
	for _, c := range cases {
		before := e.rootSnap()
		_, err := cl.Apply(e.ctx, &c.plan, noBodies{t})
		wantErr(t, c.name, err, append([]string{"user alice (" + e.root + ")"}, c.want...)...)
		e.unchanged(before)
	}
	cl.Close()
	if err := e.finish(); err != nil {
		t.Errorf("server: %v", err)
	}
}

// mutConn passes the client's frames to the server through fn, which
// returns the bytes to send instead (or an error, to cut the connection).
type mutConn struct {
	io.ReadWriteCloser
	mu  sync.Mutex
	buf []byte
	fn  func(t byte, p []byte) ([]byte, error)
}

func (c *mutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	for len(c.buf) >= 5 {
		n := int(binary.BigEndian.Uint32(c.buf[1:5]))
		if len(c.buf) < 5+n {
			break
		}
		t, payload := c.buf[0], append([]byte(nil), c.buf[5:5+n]...)
		c.buf = c.buf[5+n:]
		out, err := c.fn(t, payload)
		if len(out) > 0 {
			if _, werr := c.ReadWriteCloser.Write(out); werr != nil {
				return 0, werr
			}
		}
		if err != nil {
			c.ReadWriteCloser.Close()
			return 0, err
		}
	}
	return len(p), nil
}

func frame(t byte, p []byte) []byte {
	b := make([]byte, 5+len(p))
	b[0] = t
	binary.BigEndian.PutUint32(b[1:], uint32(len(p)))
	copy(b[5:], p)
	return b
}

func jsonFrame(t byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return frame(t, b)
}

// bodies hands out fixed bodies by GUID.
type bodies map[string]string

func (s bodies) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(int, io.Reader) error) error {
	for i, r := range refs {
		b, ok := s[r.GUID]
		if !ok {
			continue
		}
		if err := fn(i, strings.NewReader(b)); err != nil {
			return err
		}
	}
	return nil
}

var errCut = errors.New("test cuts the connection")

func TestHostileBodyStream(t *testing.T) {
	const body = "0123456789"
	plan := func() merge.SidePlan {
		return merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, UIDNext: 11, Adds: []merge.Add{
			{Msg: model.Message{UID: 10, GUID: "1700000010.M10P1.peer", Size: int64(len(body)), Mtime: 1.7e18}, SourceBox: inboxGUID, SourceUID: 10},
		}}}}
	}
	var bodyHdr []byte
	tests := []struct {
		name string
		fn   func(t byte, p []byte) ([]byte, error)
		want string // in the server's error; "" for a legitimate exchange
	}{
		{"legitimate", nil, ""},
		{"longer", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				p = append(p, "EXTRA"...)
			}
			return frame(t, p), nil
		}, "body longer than announced"},
		{"extra data frame", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				return append(frame(t, p), frame('D', []byte("X"))...), nil
			}
			return frame(t, p), nil
		}, "body longer than announced"},
		{"shorter", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				p = p[:len(p)-3]
			}
			return frame(t, p), nil
		}, "body shorter than announced (3 bytes missing)"},
		{"no data", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				return nil, nil
			}
			return frame(t, p), nil
		}, "body shorter than announced (10 bytes missing)"},
		{"size not asked for", func(t byte, p []byte) ([]byte, error) {
			if t == 'B' {
				p = []byte(`{"i":0,"size":1099511627776}`)
			}
			return frame(t, p), nil
		}, "announced as 1099511627776 bytes, 10 were asked for"},
		{"index out of range", func(t byte, p []byte) ([]byte, error) {
			if t == 'B' {
				p = []byte(`{"i":7,"size":10}`)
			}
			return frame(t, p), nil
		}, "body header 7/1"},
		{"twice", func(t byte, p []byte) ([]byte, error) {
			switch t {
			case 'B':
				bodyHdr = p
			case 'Z':
				return append(frame('Z', nil), append(frame('B', bodyHdr), append(frame('D', []byte(body)), frame('Z', nil)...)...)...), nil
			}
			return frame(t, p), nil
		}, "sent twice"},
		{"garbage in body", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				return frame('X', p), nil
			}
			return frame(t, p), nil
		}, "unknown frame type 0x58"},
		{"request in body", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				return jsonFrame('Q', map[string]any{"op": "commit"}), nil
			}
			return frame(t, p), nil
		}, "unexpected frame 'Q' inside a body"},
		{"cut in body", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				return frame(t, p[:4]), errCut
			}
			return frame(t, p), nil
		}, "truncated"},
		{"cut in frame", func(t byte, p []byte) ([]byte, error) {
			if t == 'D' {
				return frame(t, p)[:8], errCut
			}
			return frame(t, p), nil
		}, "truncated"},
		{"cut before the reply", func(t byte, p []byte) ([]byte, error) {
			if t == 'R' {
				return nil, errCut
			}
			return frame(t, p), nil
		}, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, maildir.LayoutMaildirPP)
			if tt.fn != nil {
				e.conn = &mutConn{ReadWriteCloser: e.conn, fn: tt.fn}
			}
			cl := e.dial()
			e.begin(cl)
			before := e.rootSnap()
			p := plan()
			res, err := cl.Apply(e.ctx, &p, bodies{"1700000010.M10P1.peer": body})
			if tt.want == "" {
				if err != nil || res.Added != 1 || res.Fetched != 1 {
					t.Fatalf("legitimate apply: %+v, %v", res, err)
				}
				// Only INBOX's own files changed: the new message and the
				// control files.
				for _, d := range snapDiff(before, e.rootSnap()) {
					if !strings.HasPrefix(d, "added cur/1700000010.M10P1.peer") && !strings.HasPrefix(d, "changed dovecot-uidlist") {
						t.Errorf("legitimate apply changed %s", d)
					}
				}
				cl.Close()
				if err := e.finish(); err != nil {
					t.Errorf("server: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("the apply succeeded: %+v", res)
			}
			serr := e.finish()
			wantErr(t, "server", serr, tt.want)
			if !errors.Is(serr, wire.ErrProtocol) {
				t.Errorf("server error %v is not a protocol error", serr)
			}
			e.unchanged(before)
		})
	}
}

// The client's own source failing is reported to the server, which
// reports it back as the apply's error and goes on.
func TestBodySourceErrorReachesServer(t *testing.T) {
	e := newEnv(t, maildir.LayoutMaildirPP)
	cl := e.dial()
	e.begin(cl)
	before := e.rootSnap()
	p := merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, UIDNext: 11, Adds: []merge.Add{
		{Msg: model.Message{UID: 10, GUID: "m10", Size: 3}, SourceBox: inboxGUID, SourceUID: 10},
	}}}}
	_, err := cl.Apply(e.ctx, &p, failing{})
	wantErr(t, "apply", err, "disk on fire")
	e.unchanged(before)
	if _, err := cl.Begin(e.ctx, replica.BeginRequest{Peer: self}); err != nil {
		t.Errorf("session unusable after the error: %v", err)
	}
	cl.Close()
	if err := e.finish(); err != nil {
		t.Errorf("server: %v", err)
	}
}

type failing struct{}

func (failing) Fetch(context.Context, []replica.BodyRef, func(int, io.Reader) error) error {
	return errors.New("disk on fire")
}

// rawReply reads the server's next frame (joining parts) from r.
func rawReply(t *testing.T, r *bufio.Reader) (byte, string, error) {
	t.Helper()
	var acc []byte
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return 0, "", err
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > wire.MaxFrame {
			t.Fatalf("server sent a frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return 0, "", err
		}
		acc = append(acc, p...)
		if hdr[0] == 'E' {
			var em struct{ Message string }
			if err := json.Unmarshal(acc, &em); err != nil {
				t.Errorf("error frame %q: %v", acc, err)
			}
			return 'E', em.Message, nil
		}
		if hdr[0] != 'P' {
			return hdr[0], string(acc), nil
		}
	}
}

func TestGarbageAfterHandshake(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	random := make([]byte, 200)
	rnd.Read(random)
	tests := []struct {
		name  string
		begin bool
		in    []byte
		want  string
	}{
		{"http", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "unknown frame type 0x47"},
		{"random", false, random, "protocol error"},
		{"huge frame", false, []byte{'Q', 0xff, 0xff, 0xff, 0xff}, "exceeds the limit"},
		{"not json", false, frame('Q', []byte("rm -rf /")), "request: invalid character"},
		{"args of the wrong type", false, frame('Q', []byte(`{"op":"begin","args":"x"}`)), "arguments: json"},
		{"reply frame", false, frame('R', []byte(`{}`)), "expected a request, got frame 'R'"},
		{"hello again", false, jsonFrame('H', map[string]any{"proto": "twinbox", "min": 1, "max": 1}), "expected a request, got frame 'H'"},
		{"body frame", false, frame('D', []byte("data")), "unexpected frame 'D' where a message was expected"},
		{"chunk frame", false, frame('C', []byte("{}")), "expected a request, got frame 'C'"},
		{"unknown op", true, jsonFrame('Q', map[string]any{"op": "exec", "args": "rm -rf /"}), `unknown request "exec"`},
		{"apply args not an object", true, jsonFrame('Q', map[string]any{"op": "apply", "args": []int{1}}), "protocol error"},
		{"fetch args not a list", true, jsonFrame('Q', map[string]any{"op": "fetch", "args": map[string]string{"box": "../x"}}), "arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, maildir.LayoutMaildirPP)
			cl := e.dial()
			if tt.begin {
				e.begin(cl)
			}
			before := e.rootSnap()
			if _, err := e.conn.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			ft, msg, err := rawReply(t, bufio.NewReader(e.conn))
			if err != nil || ft != 'E' || !strings.Contains(msg, tt.want) {
				t.Errorf("server replied %q %s (%v), want an error frame containing %q", ft, msg, err, tt.want)
			}
			serr := e.finish()
			wantErr(t, "server", serr, tt.want)
			if !errors.Is(serr, wire.ErrProtocol) {
				t.Errorf("server error %v is not a protocol error", serr)
			}
			e.unchanged(before)
		})
	}
}

func TestRequestsOutOfOrder(t *testing.T) {
	createPlan := merge.SidePlan{
		Creates: []merge.MailboxOp{{GUID: guid(0x70), Name: "Fresh", NameT: 1, UIDValidity: 7}},
		Boxes:   []merge.BoxPlan{{GUID: workGUID, Expunges: []merge.Expunge{{UID: 1, GUID: "1700000003.M3P1.fixture"}}}},
	}
	tests := []struct {
		name   string
		before func(e *env, cl *wire.Client)
		call   func(e *env, cl *wire.Client) error
		want   string
	}{
		{"apply before begin", nil, func(e *env, cl *wire.Client) error {
			p := createPlan
			_, err := cl.Apply(e.ctx, &p, noBodies{e.t})
			return err
		}, `request "apply" before "begin"`},
		{"changes before begin", nil, func(e *env, cl *wire.Client) error {
			_, err := cl.Changes(e.ctx, replica.ChangesRequest{Boxes: []replica.BoxSince{{GUID: inboxGUID}}})
			return err
		}, `request "changes" before "begin"`},
		{"commit before begin", nil, func(e *env, cl *wire.Client) error {
			return cl.Commit(e.ctx, replica.CommitRequest{Peer: self, SyncID: "x", Bases: map[model.MailboxGUID]uint32{inboxGUID: 99}})
		}, `request "commit" before "begin"`},
		{"fetch before begin", nil, func(e *env, cl *wire.Client) error {
			return cl.Fetch(e.ctx, []replica.BodyRef{{Box: inboxGUID, UID: 1, GUID: "1700000001.M1P1.fixture", Size: 10}}, func(int, io.Reader) error { return nil })
		}, `request "fetch" before "begin"`},
		{"apply before changes", func(e *env, cl *wire.Client) {
			if _, err := cl.Begin(e.ctx, replica.BeginRequest{Peer: self}); err != nil {
				e.t.Fatal(err)
			}
		}, func(e *env, cl *wire.Client) error {
			p := createPlan
			_, err := cl.Apply(e.ctx, &p, noBodies{e.t})
			return err
		}, `request "apply" before "changes"`},
		{"commit before apply", func(e *env, cl *wire.Client) { e.begin(cl) }, func(e *env, cl *wire.Client) error {
			return cl.Commit(e.ctx, replica.CommitRequest{Peer: self, SyncID: "x", Bases: map[model.MailboxGUID]uint32{inboxGUID: 99}})
		}, `request "commit" before "apply"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, maildir.LayoutMaildirPP)
			cl := e.dial()
			if tt.before != nil {
				tt.before(e, cl)
			}
			before := e.rootSnap()
			err := tt.call(e, cl)
			var pe *wire.PeerError
			if !errors.As(err, &pe) {
				t.Errorf("got %v, want the server's error", err)
			}
			wantErr(t, "client", err, tt.want)
			serr := e.finish()
			wantErr(t, "server", serr, tt.want)
			e.unchanged(before)
		})
	}
}

// An apply's adds travel in 'C' chunks after the request: a client that
// lies about them.
func TestHostileApplyChunks(t *testing.T) {
	plan := merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, UIDNext: 11}}}
	apply := func(chunks int) []byte {
		return jsonFrame('Q', map[string]any{"op": "apply", "args": map[string]any{"plan": plan, "chunks": chunks}})
	}
	addChunk := func(box int, g string) []byte {
		return jsonFrame('C', map[string]any{"box": box, "adds": []merge.Add{{Msg: model.Message{UID: 10, GUID: g, Size: 3}, SourceBox: inboxGUID, SourceUID: 10}}})
	}
	tests := []struct {
		name  string
		in    []byte
		close bool   // the client hangs up after in
		want  string // in the server's error
		reply bool   // the server says so
		fatal bool   // and ends the session
	}{
		{"negative count", apply(-1), false, "apply announces -1 chunks", true, true},
		{"huge count", apply(1 << 40), false, "apply announces 1099511627776 chunks", true, true},
		{"fewer chunks", cat(apply(2), addChunk(0, "m1"), jsonFrame('Q', map[string]any{"op": "commit"})), false, "expected chunk 2 of 2, got frame 'Q'", true, true},
		{"chunk for another mailbox", cat(apply(1), addChunk(5, "m1")), false, "apply chunk for mailbox 5 of 1", true, true},
		{"chunk for a negative mailbox", cat(apply(1), addChunk(-1, "m1")), false, "apply chunk for mailbox -1 of 1", true, true},
		{"chunk not json", cat(apply(1), frame('C', []byte("{{"))), false, "apply chunk", true, true},
		{"hang up between chunks", cat(apply(3), addChunk(0, "m1")), true, "the stream ended before chunk 2 of 3", false, true},
		{"hang up in a chunk", cat(apply(1), addChunk(0, "m1")[:20]), true, "truncated", false, true},
		{"bad GUID in a chunk", cat(apply(1), addChunk(0, "../../victim/file")), false, `user alice (` /* root follows */, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, maildir.LayoutMaildirPP)
			cl := e.dial()
			e.begin(cl)
			before := e.rootSnap()
			if _, err := e.conn.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			if tt.close {
				e.conn.Close()
			}
			r := bufio.NewReader(e.conn)
			ft, msg, err := rawReply(t, r)
			switch {
			case tt.reply && (err != nil || ft != 'E' || !strings.Contains(msg, tt.want)):
				t.Errorf("server replied %q %s (%v), want an error containing %q", ft, msg, err, tt.want)
			case !tt.reply && err == nil:
				t.Errorf("server replied %q %s to a client that left", ft, msg)
			}
			if !tt.fatal {
				// The plan was refused as a plan: named, and the session
				// goes on.
				for _, w := range []string{e.root, `mailbox "INBOX"`, `"../../victim/file"`} {
					if !strings.Contains(msg, w) {
						t.Errorf("error %q does not name %q", msg, w)
					}
				}
				e.conn.Write(jsonFrame('Q', map[string]any{"op": "close"}))
				if ft, _, err := rawReply(t, r); err != nil || ft != 'R' {
					t.Errorf("close after a refused plan: %q %v", ft, err)
				}
				if err := e.finish(); err != nil {
					t.Errorf("server: %v", err)
				}
			} else {
				wantErr(t, "server", e.finish(), tt.want)
			}
			e.unchanged(before)
		})
	}
}
