package jsonfast

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// awkward are strings encoding/json escapes or rewrites.
var awkward = append([]string{"\xff", "a\x00b", "\x7f", "\u2029", "\x1f", "é\xc3", "a\ufffdb", "/", "'", "+&+"}, names...)

func randString(rng *rand.Rand) string {
	if rng.IntN(2) == 0 {
		return awkward[rng.IntN(len(awkward))]
	}
	b := make([]byte, rng.IntN(12))
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return string(b)
}

// TestAppendBeginReplyIsJSONMarshal: the hand-written encoder writes the
// very bytes json.Marshal writes, for random replies (nil and empty lists,
// omitted fields, saved state with and without mailboxes, awkward and
// invalid-UTF-8 names), and they decode to the same value.
func TestAppendBeginReplyIsJSONMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := 0; i < 3000; i++ {
		r := randBegin(rng)
		if i%2 == 1 {
			for j := range r.Mailboxes {
				if rng.IntN(3) == 0 {
					r.Mailboxes[j].Name = randString(rng)
				}
				if rng.IntN(5) == 0 {
					r.Mailboxes[j].Special = randString(rng)
				}
			}
			for j := range r.Subs {
				r.Subs[j].Name = randString(rng)
			}
			r.Info.User, r.Info.Root = randString(rng), randString(rng)
			if r.Pair != nil && rng.IntN(2) == 0 {
				r.Pair.SyncID, r.Pair.PeerIndexID = randString(rng), randString(rng)
			}
			if r.Pair != nil && r.Pair.Boxes != nil && rng.IntN(3) == 0 {
				r.Pair.Boxes = map[model.MailboxGUID]replica.PairBoxState{}
			}
			switch rng.IntN(3) {
			case 0:
				r.Held = []replica.HeldInfo{}
			case 1:
				r.Held = append(r.Held, replica.HeldInfo{Mailbox: randString(rng), Count: -rng.IntN(5)})
			}
			if rng.IntN(2) == 0 {
				r.UIDValidity = rng.Uint32()
			}
		}
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendBeginReply([]byte("prefix"), &r)
		if !bytes.Equal(got[6:], want) || string(got[:6]) != "prefix" {
			t.Fatalf("reply %d:\nAppendBeginReply %s\njson.Marshal     %s", i, got, want)
		}
		var a, b replica.BeginReply
		if err := json.Unmarshal(got[6:], &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("reply %d decodes differently", i)
		}
	}
}

func BenchmarkAppendBeginReply(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := replica.BeginReply{Info: replica.Info{ReplicaID: "index-c0515ae0c0524f5a2fb07872622b362c", IndexID: "c0515ae0c0524f5a2fb07872622b362c", Root: "/srv/mail/b"},
		Subs: []model.Subscription{}, Pair: &replica.PairState{PeerIndexID: "04da866afdc128f15f0f81f500dc9fcb", SyncID: "9f2c", Boxes: map[model.MailboxGUID]replica.PairBoxState{}}}
	for i := 0; i < 41; i++ {
		m := model.Mailbox{GUID: randGUID(rng), Name: fmt.Sprintf("Folder%02d/Sub%02d", i, i+1), NameT: 1764380000000000000 + int64(i),
			UIDValidity: 1764380000, UIDNext: 2000, Modseq: 123456, Epoch: rng.Uint64(), Messages: 1300}
		r.Mailboxes = append(r.Mailboxes, m)
		r.Pair.Boxes[m.GUID] = replica.PairBoxState{Base: 2000, Sent: 123456, Epoch: m.Epoch, PeerEpoch: rng.Uint64()}
	}
	b.Run("append", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_ = AppendBeginReply(nil, &r)
		}
	})
	b.Run("json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _ = json.Marshal(&r)
		}
	})
}

// TestAppendApplyResultIsJSONMarshal: the apply reply's encoder writes the
// very bytes json.Marshal writes (nil, empty and full epochs, skipped
// steps with awkward strings, negative counts).
func TestAppendApplyResultIsJSONMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 9))
	for i := 0; i < 3000; i++ {
		r := replica.ApplyResult{Added: int(rng.Int32()) - 1<<30, Linked: rng.IntN(9), Fetched: rng.IntN(9), Expunged: rng.IntN(9),
			Flagged: rng.IntN(9), Moved: -rng.IntN(3), Bytes: randI64(rng), MailboxOps: rng.IntN(3), Changed: rng.IntN(2) == 0}
		switch rng.IntN(3) {
		case 0:
			r.Skipped = []string{}
		case 1:
			for j := 0; j < 1+rng.IntN(3); j++ {
				r.Skipped = append(r.Skipped, randString(rng))
			}
		}
		switch rng.IntN(4) {
		case 0:
		case 1:
			r.Epochs = map[model.MailboxGUID]uint64{}
		default:
			r.Epochs = map[model.MailboxGUID]uint64{}
			for j := 0; j < rng.IntN(60); j++ {
				r.Epochs[randGUID(rng)] = rng.Uint64() >> rng.IntN(64)
			}
		}
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendApplyResult(nil, &r); !bytes.Equal(got, want) {
			t.Fatalf("result %d:\nAppendApplyResult %s\njson.Marshal      %s", i, got, want)
		}
	}
}

// The begin-reply decoder sizes its mailbox list from the reply, within a
// bound: a hostile reply full of mailbox openings does not get a list
// much larger than itself.
func TestBeginReplyMailboxRoomBounded(t *testing.T) {
	v := []byte(`{"mailboxes":[` + string(bytes.Repeat([]byte(`{"guid":1},`), 20000)) + `{}]}`)
	var r replica.BeginReply
	if BeginReply(v, &r) {
		t.Fatal("a reply with bad GUIDs was taken")
	}
	if c := cap(r.Mailboxes); c > 4096 {
		t.Fatalf("the mailbox list got room for %d", c)
	}
	// A well-formed reply gets its list sized once.
	rng := rand.New(rand.NewPCG(1, 1))
	w := replica.BeginReply{Info: replica.Info{ReplicaID: "r", IndexID: "i"}}
	for i := 0; i < 30; i++ {
		w.Mailboxes = append(w.Mailboxes, model.Mailbox{GUID: randGUID(rng), Name: fmt.Sprint("F", i), UIDNext: uint32(i)})
	}
	raw, _ := json.Marshal(&w)
	var got replica.BeginReply
	if !BeginReply(raw, &got) || len(got.Mailboxes) != len(w.Mailboxes) || cap(got.Mailboxes) != len(w.Mailboxes) {
		t.Fatalf("%d mailboxes decoded into room for %d, want %d", len(got.Mailboxes), cap(got.Mailboxes), len(w.Mailboxes))
	}
}
