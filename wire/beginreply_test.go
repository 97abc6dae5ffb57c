package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// A begin reply goes out through the hand-written encoder: the frames are
// the ones json.Marshal's bytes would make, for a small reply and for one
// large enough to be split into parts.
func TestWriteMsgBeginReplyFrames(t *testing.T) {
	for _, n := range []int{0, 3, 9000} {
		r := &replica.BeginReply{Info: replica.Info{ReplicaID: "r<&>", IndexID: "i"}, Subs: []model.Subscription{{Name: "Entwürfe", Subscribed: true, T: 5}},
			Pair: &replica.PairState{PeerIndexID: "p", SyncID: "s", Boxes: map[model.MailboxGUID]replica.PairBoxState{}}}
		for i := 0; i < n; i++ {
			g := model.MailboxGUID{byte(i), byte(i >> 8), 7}
			r.Mailboxes = append(r.Mailboxes, model.Mailbox{GUID: g, Name: fmt.Sprintf("F\"%d", i), UIDNext: uint32(i), Messages: i})
			r.Pair.Boxes[g] = replica.PairBoxState{Base: uint32(i), Sent: uint64(i) << 40}
		}
		var got, want bytes.Buffer
		if err := writeConn(&got).writeMsg(fReply, r); err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeConn(&want).writeMsg(fReply, json.RawMessage(raw)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("%d mailboxes: the begin reply's frames differ from json.Marshal's (%d vs %d bytes)", n, got.Len(), want.Len())
		}
		if n == 9000 && got.Len() < MaxFrame {
			t.Fatalf("the large reply (%d bytes) was not split into parts", got.Len())
		}
	}
}
