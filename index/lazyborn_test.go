package index

import (
	"context"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/sync/merge"
)

// lazySource hands out a plan's adds mailbox by mailbox, as the wire
// server's callback does (replica.AddSource).
type lazySource struct {
	gappySource
	adds [][]merge.Add
}

func (s *lazySource) Adds(ctx context.Context, box int) ([]merge.Add, error) {
	return s.adds[box], nil
}

// The adds of a plan whose adds come mailbox by mailbox (over the wire)
// have their Born stamps journaled before they are linked, also when the
// apply recorded every mailbox's tmp/ up front (several mailboxes): an
// apply killed before a mailbox's index commit leaves the stamps to the
// next scan instead of letting it invent "born now".
func TestLazyAddsBornJournaled(t *testing.T) {
	r, _, plan, src := precreatePlan(t, 5)
	ls := &lazySource{gappySource: *src}
	for i := range plan.Boxes {
		for j := range plan.Boxes[i].Adds {
			plan.Boxes[i].Adds[j].Msg.Born = int64(1_700_000_000_000_000_000 + i*100 + j)
		}
		ls.adds = append(ls.adds, plan.Boxes[i].Adds)
		plan.Boxes[i].AddCount = len(plan.Boxes[i].Adds)
		plan.Boxes[i].Adds = nil
	}
	var journaled map[string]int64
	restore := SetTestHookBeforeBoxCommit(func(string) {
		_ = r.store.db.View(func(tx *bolt.Tx) error {
			if j := bornJournal(tx, plan.Boxes[0].GUID); j != nil {
				journaled = j.borns
			}
			return nil
		})
		panic("killed")
	})
	func() {
		defer func() {
			if p := recover(); p != "killed" {
				t.Fatalf("apply ended with %v, want the kill", p)
			}
		}()
		_, _ = r.Apply(context.Background(), plan, ls)
	}()
	restore()
	for _, a := range ls.adds[0] {
		if journaled[a.Msg.GUID] != a.Msg.Born {
			t.Errorf("message %s: journaled Born %d, want %d", a.Msg.GUID, journaled[a.Msg.GUID], a.Msg.Born)
		}
	}
}
