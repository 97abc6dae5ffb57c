package index

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// recordingSource is a peer that, before sending each batch of bodies,
// notes which mailbox directories the receiving index records as holding
// temporary files (dirty_tmp).
type recordingSource struct {
	r       *Replica
	bodies  map[string]string // by message GUID
	fetches int
	seen    [][]string
}

func (s *recordingSource) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	s.fetches++
	_ = s.r.store.db.View(func(tx *bolt.Tx) error {
		var dirs []string
		if v := tx.Bucket(bMeta).Get([]byte("dirty_tmp")); v != nil {
			dirs = strings.Split(string(v), "\x00")
		}
		sort.Strings(dirs)
		s.seen = append(s.seen, dirs)
		return nil
	})
	for i, ref := range refs {
		if err := fn(i, strings.NewReader(s.bodies[ref.GUID])); err != nil {
			return err
		}
	}
	return nil
}

// An apply that brings messages into several mailboxes records all their
// directories as dirty_tmp before the first body is written (one commit
// for the apply, where there was one per mailbox), so that a crash while
// any mailbox's bodies are in tmp/ leaves them to the next open's cleanup;
// the record is gone when the apply ends.
func TestTmpDirsRecordedOnce(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	boxes := []string{root, filepath.Join(root, ".Work"), filepath.Join(root, ".Lists.Go")}
	for i, dir := range boxes {
		putFile(t, dir, fmt.Sprintf("17000000%02d.M%dP1.test,S=10", i, i), "body here\r\n")
	}
	r := openTestReplica(t, root)
	if _, err := r.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	src := &recordingSource{r: r, bodies: map[string]string{}}
	plan := &merge.SidePlan{}
	for bi, dir := range boxes {
		ul, _, err := maildir.ReadUidlist(dir)
		if err != nil {
			t.Fatal(err)
		}
		g := model.MailboxGUID(ul.GUID)
		bp := merge.BoxPlan{GUID: g, UIDNext: 2 + 200}
		for j := 0; j < 150; j++ { // a large batch in each mailbox
			body := fmt.Sprintf("message %d/%d\r\n", bi, j)
			id := fmt.Sprintf("1700001%03d.M%dP%d.peer,S=%d", j, j, bi, len(body))
			src.bodies[id] = body
			bp.Adds = append(bp.Adds, merge.Add{Msg: model.Message{GUID: id, UID: uint32(2 + j), Size: int64(len(body))}, SourceBox: g, SourceUID: uint32(2 + j)})
		}
		plan.Boxes = append(plan.Boxes, bp)
	}
	res, err := r.Apply(ctx, plan, src)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 450 || len(res.Skipped) > 0 {
		t.Fatalf("apply: %+v", res)
	}
	want := append([]string(nil), boxes...)
	sort.Strings(want)
	if src.fetches != 3 {
		t.Fatalf("%d fetches, want one per mailbox", src.fetches)
	}
	for i, got := range src.seen {
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("fetch %d: dirty_tmp names %v, want every mailbox of the apply %v", i, got, want)
		}
	}
	_ = r.store.db.View(func(tx *bolt.Tx) error {
		for _, k := range []string{"dirty_tmp", "dirty_apply"} {
			if tx.Bucket(bMeta).Get([]byte(k)) != nil {
				t.Errorf("%s left after the apply", k)
			}
		}
		return nil
	})
}
