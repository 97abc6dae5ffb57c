package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
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

// A changes chunk without records goes out as json.Marshal writes it; one
// with records still goes through json.Marshal; and writeChanges' chunks,
// buffered, are all out (with the closing reply) when it returns.
func TestChangesChunkFrames(t *testing.T) {
	g := model.MailboxGUID{0xde, 0xad, 0, 0xff}
	for _, ch := range []changesChunk{
		{GUID: g},
		{GUID: g, Messages: []model.Message{}},
		{GUID: model.MailboxGUID{}},
		{GUID: g, Tombstones: []model.Tombstone{{UID: 5}}},
	} {
		var got, want bytes.Buffer
		c := writeConn(&got)
		if err := c.bufferMsg(fChunk, ch); err != nil {
			t.Fatal(err)
		}
		if err := c.flush(); err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(ch)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeConn(&want).writeMsg(fChunk, json.RawMessage(raw)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("chunk %+v: frames %q, json.Marshal's %q", ch, got.Bytes(), want.Bytes())
		}
	}
	contents := map[model.MailboxGUID]*merge.Contents{}
	for i := 0; i < 300; i++ {
		contents[model.MailboxGUID{byte(i), byte(i >> 8)}] = &merge.Contents{}
	}
	var out bytes.Buffer
	if err := writeChanges(writeConn(&out), contents); err != nil {
		t.Fatal(err)
	}
	rc := readerConn(out.Bytes(), io.Discard)
	seen := map[model.MailboxGUID]bool{}
	for {
		typ, b, err := rc.readMsg()
		if err != nil {
			t.Fatalf("after %d chunks: %v", len(seen), err)
		}
		if typ == fReply {
			break
		}
		var ch changesChunk
		if typ != fChunk || json.Unmarshal(b, &ch) != nil || contents[ch.GUID] == nil || seen[ch.GUID] {
			t.Fatalf("frame %q %s", typ, b)
		}
		seen[ch.GUID] = true
	}
	if len(seen) != len(contents) {
		t.Fatalf("%d chunks for %d mailboxes", len(seen), len(contents))
	}
}

// An apply reply goes out through its hand-written encoder: the same frame
// as json.Marshal's bytes make.
func TestWriteMsgApplyResultFrame(t *testing.T) {
	r := &replica.ApplyResult{Added: 2, Bytes: 1 << 40, Skipped: []string{"<x>"}, Epochs: map[model.MailboxGUID]uint64{{9}: 3, {1}: 4, {5, 5}: 0}}
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
		t.Fatalf("apply reply frame %q, json.Marshal's %q", got.Bytes(), want.Bytes())
	}
}
