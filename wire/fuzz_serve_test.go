package wire_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/wire"
)

// clientFixture is the recorded client's replica: an INBOX of its own
// (merged with the server's), and a folder the server lacks.
func clientFixture() []fixBox {
	return []fixBox{
		{Name: "INBOX", GUID: guid(0x30), UIDValidity: 3000, Msgs: []fixMsg{
			{UID: 1, Base: "1700000101.M101P2.client", Flags: "S", Body: "client one"},
			{UID: 2, Base: "1700000102.M102P2.client", Body: "client two"},
			{UID: 3, Base: "1700000001.M1P1.fixture", Flags: "RS", Body: "one"},
		}},
		{Name: "Lists/Go", GUID: guid(0x40), UIDValidity: 4000, Msgs: []fixMsg{
			{UID: 7, Base: "1700000107.M107P2.client", Flags: "F", Body: strings.Repeat("go ", 600)},
		}},
	}
}

// copyTree copies a directory tree, keeping modes and mtimes.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, rel)
			return os.MkdirAll(to, fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Chtimes(to, fi.ModTime(), fi.ModTime())
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, err := os.Stat(filepath.Join(src, dirs[i]))
		if err == nil {
			os.Chtimes(filepath.Join(dst, dirs[i]), fi.ModTime(), fi.ModTime())
		}
	}
}

// recorder keeps what the client writes.
type recorder struct {
	io.ReadWriteCloser
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	return r.ReadWriteCloser.Write(p)
}

// recordSession runs a real sync of a client replica with a copy of tmpl
// served over the wire and returns the bytes the client sent.
func recordSession(t testing.TB, tmpl string, run func(ctx context.Context, local *index.Replica, cl *wire.Client) error) []byte {
	t.Helper()
	d := t.TempDir()
	root, local := filepath.Join(d, "server"), filepath.Join(d, "client")
	copyTree(t, tmpl, root)
	writeFixture(t, local, clientFixture())
	ctx := context.Background()
	rl, err := index.Open(ctx, maildir.Location{Root: local}, index.Options{ReplicaID: "fuzz-client", LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	srv := startServer(t, ctx, maildir.Location{Root: root})
	rec := &recorder{ReadWriteCloser: srv.conn}
	cl, err := wire.Dial(ctx, rec, "fuzz", rl.Info())
	if err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, rl, cl); err != nil {
		t.Fatal(err)
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.wait(t); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]byte(nil), rec.buf.Bytes()...)
}

// handHello is a client's hello, made by hand.
func handHello() []byte {
	return jsonFrame('H', map[string]any{"proto": "twinbox", "min": 1, "max": wire.Version, "user": "fuzz",
		"replica": replica.Info{ReplicaID: "fuzz-client", IndexID: "00112233445566778899aabbccddeeff"}})
}

func request(op string, args any) []byte {
	raw, _ := json.Marshal(args)
	return jsonFrame('Q', map[string]any{"op": op, "args": json.RawMessage(raw)})
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// FuzzServe feeds arbitrary bytes to wire.Serve as the client's side of a
// connection, against a real replica (a fresh copy of one fixture each
// time). It must not panic, must end within a deadline once the input
// ends, and must write nothing outside the replica's root. Seeds: recorded
// real sessions and hand-made hostile ones.
func FuzzServe(f *testing.F) {
	tmpl := filepath.Join(f.TempDir(), "tmpl")
	writeFixture(f, tmpl, serverFixture(maildir.LayoutMaildirPP))
	scanOnce(f, maildir.Location{Root: tmpl})

	// A whole first sync: merges INBOX (adopt), creates Lists/Go, streams
	// bodies both ways, commits.
	f.Add(recordSession(f, tmpl, func(ctx context.Context, rl *index.Replica, cl *wire.Client) error {
		s, err := session.Run(ctx, rl, cl, session.Options{})
		if err == nil && (s.ResultB == nil || s.ResultB.Fetched == 0 || s.ResultA.Fetched == 0) {
			err = fmt.Errorf("the recorded sync moved no bodies: %+v %+v", s.ResultA, s.ResultB)
		}
		return err
	}))
	// The same with the server as side A.
	f.Add(recordSession(f, tmpl, func(ctx context.Context, rl *index.Replica, cl *wire.Client) error {
		_, err := session.Run(ctx, cl, rl, session.Options{})
		return err
	}))
	// A check (begin and changes only).
	f.Add(recordSession(f, tmpl, func(ctx context.Context, rl *index.Replica, cl *wire.Client) error {
		_, err := session.Check(ctx, rl, cl, session.Options{})
		return err
	}))
	// By hand: a fetch of the fixture's messages, good and bad refs.
	refs := []replica.BodyRef{
		{Box: inboxGUID, UID: 1, GUID: "1700000001.M1P1.fixture", Size: 53},
		{Box: workGUID, UID: 1, GUID: "1700000003.M3P1.fixture", Size: 55},
		{Box: inboxGUID, UID: 2, GUID: "../../etc/passwd", Size: 10},
		{Box: guid(0x99), UID: 9, GUID: "1700000002.M2P1.fixture", Size: -1},
	}
	begin := request("begin", replica.BeginRequest{Peer: replica.Info{ReplicaID: "fuzz-client"}})
	changes := request("changes", replica.ChangesRequest{Boxes: []replica.BoxSince{{GUID: inboxGUID}, {GUID: workGUID}}})
	f.Add(cat(handHello(), begin, request("fetch", refs), request("close", struct{}{})))
	// Out of order, garbage, a hostile plan.
	f.Add(cat(handHello(), request("apply", map[string]any{"plan": merge.SidePlan{}, "chunks": 0})))
	f.Add(cat(handHello(), []byte("GET / HTTP/1.1\r\n\r\n")))
	bad := merge.SidePlan{
		Creates: []merge.MailboxOp{{GUID: guid(0x77), Name: "../evil", UIDValidity: 1}},
		Boxes: []merge.BoxPlan{{GUID: inboxGUID, UIDNext: 20, Adds: []merge.Add{
			{Msg: model.Message{UID: 10, GUID: "../x", Size: 3}, SourceBox: inboxGUID, SourceUID: 1},
		}}},
	}
	f.Add(cat(handHello(), begin, changes, request("apply", map[string]any{"plan": bad, "chunks": 0}), request("close", struct{}{})))
	good := merge.SidePlan{Boxes: []merge.BoxPlan{{GUID: inboxGUID, UIDNext: 11}}}
	f.Add(cat(handHello(), begin, changes,
		request("apply", map[string]any{"plan": good, "chunks": 1}),
		jsonFrame('C', map[string]any{"box": 0, "adds": []merge.Add{{Msg: model.Message{UID: 10, GUID: "1700000010.M10P1.peer", Size: 3, Mtime: 1.7e18}, SourceBox: inboxGUID, SourceUID: 10}}}),
		jsonFrame('B', map[string]any{"i": 0, "size": 3}), frame('D', []byte("abc")), frame('Z', nil), jsonFrame('R', struct{}{}),
		request("commit", replica.CommitRequest{Peer: replica.Info{ReplicaID: "fuzz-client"}, SyncID: "s", Bases: map[model.MailboxGUID]uint32{inboxGUID: 11}, PeerEpochs: map[model.MailboxGUID]uint64{inboxGUID: 1}}),
		request("close", struct{}{})))

	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		parent := filepath.Join(base, "p", "q")
		root := filepath.Join(parent, "root")
		copyTree(t, tmpl, root)
		outside := snapshot(t, base, func(rel string) bool { return rel == filepath.Join("p", "q", "root") }, true)
		loc := maildir.Location{Root: root}
		open := func(ctx context.Context, user string, peer replica.Info) (replica.Replica, error) {
			return index.Open(ctx, loc, index.Options{User: user, LockTimeout: time.Second})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- wire.Serve(ctx, struct {
				io.Reader
				io.Writer
			}{bytes.NewReader(data), io.Discard}, open, nil)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("Serve did not end within 30s of a %d-byte input", len(data))
		}
		if d := snapDiff(outside, snapshot(t, base, func(rel string) bool { return rel == filepath.Join("p", "q", "root") }, true)); len(d) > 0 {
			t.Fatalf("Serve changed files outside the replica's root:\n%s", strings.Join(d, "\n"))
		}
		if l := tmpLeftovers(t, root); len(l) > 0 {
			t.Fatalf("temporary files left: %v", l)
		}
	})
}

// The recorded session replays: against a fresh copy of the fixture, the
// server carries out the whole sync from the client's bytes alone. (So the
// fuzzer's seeds reach deep into the server.)
func TestServeReplay(t *testing.T) {
	tmpl := filepath.Join(t.TempDir(), "tmpl")
	writeFixture(t, tmpl, serverFixture(maildir.LayoutMaildirPP))
	scanOnce(t, maildir.Location{Root: tmpl})
	data := recordSession(t, tmpl, func(ctx context.Context, rl *index.Replica, cl *wire.Client) error {
		_, err := session.Run(ctx, rl, cl, session.Options{})
		return err
	})
	root := filepath.Join(t.TempDir(), "root")
	copyTree(t, tmpl, root)
	var out bytes.Buffer
	err := wire.Serve(context.Background(), struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(data), &out}, func(ctx context.Context, user string, peer replica.Info) (replica.Replica, error) {
		return index.Open(ctx, maildir.Location{Root: root}, index.Options{User: user, LockTimeout: time.Second})
	}, nil)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	for _, mb := range []struct{ name, base string }{
		{"Lists/Go", "1700000107.M107P2.client"},
		{"INBOX", "1700000101.M101P2.client"},
		{"INBOX", "1700000002.M2P1.fixture"},
		{"Work", "1700000003.M3P1.fixture"},
	} {
		found := false
		for _, f := range filesOf(t, root, mb.name) {
			found = found || strings.HasPrefix(f, mb.base)
		}
		if !found {
			t.Errorf("after the replay, %s lacks %s", mb.name, mb.base)
		}
	}
	if bytes.Contains(out.Bytes(), []byte(`"message"`)) {
		t.Errorf("the server reported an error in the replay: %q", out.Bytes())
	}
}

func filesOf(t *testing.T, root, mailbox string) []string {
	dir, err := maildir.Location{Root: root}.MailboxDir(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			out = append(out, e.Name())
		}
	}
	return out
}
