package index

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// gappySource sends the bodies it has; refs whose GUID is in missing are
// skipped (gone on the peer since its scan).
type gappySource struct {
	bodies  map[string]string
	missing map[string]bool
}

func (s *gappySource) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	for i, ref := range refs {
		if s.missing[ref.GUID] {
			continue
		}
		if err := fn(i, strings.NewReader(s.bodies[ref.GUID])); err != nil {
			return err
		}
	}
	return nil
}

// precreatePlan makes three empty mailboxes, scans them, and plans n adds
// into each.
func precreatePlan(t *testing.T, n int) (*Replica, []string, *merge.SidePlan, *gappySource) {
	t.Helper()
	root := t.TempDir()
	boxes := []string{root, filepath.Join(root, ".Work"), filepath.Join(root, ".Lists.Go")}
	for _, dir := range boxes {
		if err := maildir.CreateMailboxDirs(dir); err != nil {
			t.Fatal(err)
		}
	}
	r := openTestReplica(t, root)
	if _, err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := &gappySource{bodies: map[string]string{}, missing: map[string]bool{}}
	plan := &merge.SidePlan{}
	for bi, dir := range boxes {
		ul, _, err := maildir.ReadUidlist(dir)
		if err != nil {
			t.Fatal(err)
		}
		g := model.MailboxGUID(ul.GUID)
		bp := merge.BoxPlan{GUID: g, UIDNext: uint32(1 + n)}
		for j := 0; j < n; j++ {
			body := fmt.Sprintf("message %d/%d\r\n", bi, j)
			id := fmt.Sprintf("1700001%03d.M%dP%d.peer,S=%d", j, j, bi, len(body))
			src.bodies[id] = body
			bp.Adds = append(bp.Adds, merge.Add{Msg: model.Message{GUID: id, UID: uint32(1 + j), Size: int64(len(body))}, SourceBox: g, SourceUID: uint32(1 + j)})
		}
		plan.Boxes = append(plan.Boxes, bp)
	}
	return r, boxes, plan, src
}

// ourTmpFiles lists twinbox's temporary files in the mailboxes' tmp/.
func ourTmpFiles(t *testing.T, boxes []string) []string {
	t.Helper()
	var out []string
	for _, dir := range boxes {
		ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "twinbox.") {
				out = append(out, filepath.Join(dir, "tmp", e.Name()))
			}
		}
	}
	return out
}

// A first sync's large batches get their tmp/ files made ahead (one
// mailbox ahead of the bodies), and the bodies land in them: every message
// arrives with its own content, nothing is left in tmp/.
func TestPrecreatedBodies(t *testing.T) {
	r, boxes, plan, src := precreatePlan(t, precreateMin+20)
	before := precreatedUsed.Load()
	res, err := r.Apply(context.Background(), plan, src)
	if err != nil {
		t.Fatal(err)
	}
	n := 3 * (precreateMin + 20)
	if res.Fetched != n || res.Added != n || len(res.Skipped) > 0 {
		t.Fatalf("apply: %+v", res)
	}
	if used := precreatedUsed.Load() - before; used != int64(n) {
		t.Fatalf("%d bodies went into files made ahead, want all %d", used, n)
	}
	if left := ourTmpFiles(t, boxes); len(left) > 0 {
		t.Fatalf("left in tmp/: %v", left)
	}
	for bi, dir := range boxes {
		ul, _, err := maildir.ReadUidlist(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ul.Records) != precreateMin+20 {
			t.Fatalf("%s: %d records", dir, len(ul.Records))
		}
		for _, rec := range ul.Records {
			p := findByBase(dir, baseOf(rec.FileName))
			if p == "" {
				t.Fatalf("%s UID %d: no file %s", dir, rec.UID, rec.FileName)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("message %d/%d\r\n", bi, rec.UID-1); string(b) != want {
				t.Fatalf("%s UID %d holds %q, want %q", dir, rec.UID, b, want)
			}
		}
	}
}

// Files made for bodies that never came (the peer could not send them)
// are removed, and the sync is one to run again.
func TestPrecreatedLeftoversRemoved(t *testing.T) {
	r, boxes, plan, src := precreatePlan(t, precreateMin+20)
	for j := 0; j < 30; j++ {
		src.missing[plan.Boxes[1].Adds[j].Msg.GUID] = true
	}
	res, err := r.Apply(context.Background(), plan, src)
	if err != nil {
		t.Fatal(err)
	}
	if n := 3*(precreateMin+20) - 30; res.Fetched != n || !res.Changed {
		t.Fatalf("apply: fetched %d (want %d), changed %v", res.Fetched, n, res.Changed)
	}
	if left := ourTmpFiles(t, boxes); len(left) > 0 {
		t.Fatalf("left in tmp/: %d files, e.g. %v", len(left), left[0])
	}
}

// An apply killed at a mailbox's index commit, with the next mailbox's
// files made ahead, leaves only temporary files that the next open
// removes (their directories were in dirty_tmp before the first was made).
func TestPrecreatedKilledApply(t *testing.T) {
	r, boxes, plan, src := precreatePlan(t, precreateMin+20)
	restore := SetTestHookBeforeBoxCommit(func(string) { panic("killed") })
	func() {
		defer func() {
			if p := recover(); p != "killed" {
				t.Fatalf("apply ended with %v, want the kill", p)
			}
		}()
		_, _ = r.Apply(context.Background(), plan, src)
	}()
	restore()
	var recorded string
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		recorded = string(tx.Bucket(bMeta).Get([]byte("dirty_tmp")))
		return nil
	})
	for _, f := range ourTmpFiles(t, boxes) {
		if !strings.Contains(recorded, filepath.Dir(filepath.Dir(f))) {
			t.Errorf("%s left by the kill, its directory not in dirty_tmp %q", f, recorded)
		}
	}
	r.Close()
	r2 := openTestReplica(t, boxes[0])
	if left := ourTmpFiles(t, boxes); len(left) > 0 {
		t.Fatalf("left in tmp/ after the next open: %v", left)
	}
	// The next apply does it all.
	if _, err := r2.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
}
