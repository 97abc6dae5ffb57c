package wire_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/wire"
)

// fixMsg is a message of a fixture mailbox.
type fixMsg struct {
	UID   uint32
	Base  string
	Flags string // letters after ":2,"
	Body  string
}

// fixBox is a fixture mailbox with a fixed identity.
type fixBox struct {
	Name        string
	GUID        model.MailboxGUID
	UIDValidity uint32
	Msgs        []fixMsg
}

func guid(b byte) model.MailboxGUID {
	var g model.MailboxGUID
	for i := range g {
		g[i] = b + byte(i)
	}
	return g
}

// writeFixture writes mailboxes into a Maildir++ root the way Dovecot
// leaves them: files in cur/, a dovecot-uidlist with fixed GUID and
// UIDVALIDITY, fixed mtimes. The same call gives the same replica.
func writeFixture(t testing.TB, root string, boxes []fixBox) {
	t.Helper()
	loc := maildir.Location{Root: root}
	for _, b := range boxes {
		dir, err := loc.CreateMailbox(b.Name)
		if err != nil {
			t.Fatal(err)
		}
		ul := &maildir.Uidlist{Version: 3, UIDValidity: b.UIDValidity, NextUID: 1, GUID: [16]byte(b.GUID)}
		for _, m := range b.Msgs {
			body := fmt.Sprintf("From: a@example.org\r\nSubject: %s\r\n\r\n%s\r\n", m.Base, m.Body)
			base := fmt.Sprintf("%s,S=%d", m.Base, len(body))
			p := filepath.Join(dir, "cur", base+":2,"+m.Flags)
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			mt := time.Unix(1700000000+int64(m.UID), 0)
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
			ul.Records = append(ul.Records, maildir.UidRecord{UID: m.UID, FileName: base})
			ul.NextUID = max(ul.NextUID, m.UID+1)
		}
		if err := maildir.WriteUidlist(dir, ul); err != nil {
			t.Fatal(err)
		}
	}
}

// scanOnce opens the replica at loc, scans it and closes it, so that
// later scans find the index up to date.
func scanOnce(t testing.TB, loc maildir.Location) {
	t.Helper()
	ctx := context.Background()
	r, err := index.Open(ctx, loc, index.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Begin(ctx, replica.BeginRequest{}); err != nil {
		t.Fatal(err)
	}
}

// snapshot describes every entry under dir (type, mode, size, mtime and a
// hash of small files), by relative path, except those skip returns true
// for (a skipped directory is not entered). Directories' mtimes count only
// with dirTimes (a file made and removed again in tmp/ changes them).
func snapshot(t testing.TB, dir string, skip func(rel string) bool, dirTimes bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if skip != nil && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.IsDir() && !dirTimes {
			desc = fi.Mode().String()
		}
		if fi.Mode().IsRegular() && fi.Size() < 1<<20 {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(h[:8])
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// snapDiff lists the differences between two snapshots.
func snapDiff(before, after map[string]string) []string {
	var d []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		} else if w != v {
			d = append(d, fmt.Sprintf("changed %s: %s -> %s", k, v, w))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	sort.Strings(d)
	return d
}

// notIndex skips the replica's index file.
func notIndex(rel string) bool { return rel == index.DBName }

func TestSnapshotSeesChanges(t *testing.T) {
	// The helpers the hostile tests rely on must see what they look for.
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "root", "cur"), 0o700)
	os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o600)
	s0 := snapshot(t, d, func(rel string) bool { return rel == "root" }, true)
	os.WriteFile(filepath.Join(d, "root", "cur", "in"), []byte("x"), 0o600)
	if diff := snapDiff(s0, snapshot(t, d, func(rel string) bool { return rel == "root" }, true)); len(diff) != 0 {
		t.Fatalf("a change inside the skipped root was seen: %v", diff)
	}
	os.WriteFile(filepath.Join(d, "f"), []byte("y"), 0o600)
	os.WriteFile(filepath.Join(d, "g"), nil, 0o600)
	os.Symlink("/etc", filepath.Join(d, "l"))
	diff := snapDiff(s0, snapshot(t, d, func(rel string) bool { return rel == "root" }, true))
	if len(diff) != 3 || !strings.HasPrefix(diff[0], "added g") || !strings.HasPrefix(diff[1], "added l") || !strings.HasPrefix(diff[2], "changed f") {
		t.Fatalf("changes outside the root: %v", diff)
	}
}

// server runs wire.Serve for the replica at loc on one end of a
// transport.Pipe.
type server struct {
	conn io.ReadWriteCloser // the client's end
	done chan error
}

// startServer serves the replica at loc as `twinbox serve` does: for the
// user the client names in its hello.
func startServer(t testing.TB, ctx context.Context, loc maildir.Location) *server {
	t.Helper()
	ce, se, err := transport.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	open := func(ctx context.Context, user string, peer replica.Info) (replica.Replica, error) {
		return index.Open(ctx, loc, index.Options{User: user, LockTimeout: 2 * time.Second, ReplicaID: "server-" + user})
	}
	s := &server{conn: ce, done: make(chan error, 1)}
	go func() {
		err := wire.Serve(ctx, se, open, nil)
		se.Close()
		s.done <- err
	}()
	t.Cleanup(func() { ce.Close() })
	return s
}

// wait returns the server's result, failing the test if it does not end.
func (s *server) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not end")
		return nil
	}
}

// tmpLeftovers lists files left in tmp/ directories under root.
func tmpLeftovers(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(p)) == "tmp" {
			out = append(out, p)
		}
		return nil
	})
	return out
}
