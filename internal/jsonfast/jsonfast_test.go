package jsonfast

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

var names = []string{"INBOX", "Folder09", "Entw&APw-rfe", "Entwürfe", `quote"d`, `back\slash`, "tab\there", "<html>&", "日本語/子", "", " spaced ", "\u2028"}

func randGUID(rng *rand.Rand) model.MailboxGUID {
	var g model.MailboxGUID
	for i := range g {
		g[i] = byte(rng.IntN(256))
	}
	return g
}

func randI64(rng *rand.Rand) int64 {
	switch rng.IntN(4) {
	case 0:
		return -1
	case 1:
		return 0
	case 2:
		return math.MaxInt64
	}
	return rng.Int64()
}

func randBegin(rng *rand.Rand) replica.BeginReply {
	pick := func() string {
		if rng.IntN(40) == 0 { // (an escape sends the whole reply the long way)
			return names[rng.IntN(len(names))]
		}
		return []string{"INBOX", "Folder09", "Entwürfe"}[rng.IntN(3)]
	}
	r := replica.BeginReply{Info: replica.Info{ReplicaID: fmt.Sprintf("index-%032x", rng.Uint64()), IndexID: fmt.Sprintf("%032x", rng.Uint64())}}
	if rng.IntN(3) == 0 {
		r.Info.User, r.Info.Root = pick(), "/var/mail/"+pick()
	}
	switch rng.IntN(5) {
	case 0: // nil: "mailboxes":null
	case 1:
		r.Mailboxes = []model.Mailbox{}
	default:
		for i := 0; i < rng.IntN(50); i++ {
			m := model.Mailbox{GUID: randGUID(rng), Name: pick(), NameT: randI64(rng), UIDValidity: rng.Uint32(), UIDNext: rng.Uint32(),
				Modseq: rng.Uint64(), Epoch: rng.Uint64(), Messages: int(rng.Int32()), Missing: rng.IntN(9) == 0}
			if rng.IntN(6) == 0 {
				m.Deleted, m.DeletedT = true, randI64(rng)
			}
			if rng.IntN(6) == 0 {
				m.Special = `\Trash`
			}
			if rng.IntN(8) == 0 {
				m.MergedInto = randGUID(rng)
			}
			r.Mailboxes = append(r.Mailboxes, m)
		}
	}
	switch rng.IntN(4) {
	case 0:
	case 1:
		r.Subs = []model.Subscription{}
	default:
		for i := 0; i < rng.IntN(6); i++ {
			r.Subs = append(r.Subs, model.Subscription{Name: pick(), Subscribed: rng.IntN(2) == 0, T: randI64(rng)})
		}
	}
	if rng.IntN(4) != 0 {
		r.Pair = &replica.PairState{PeerIndexID: fmt.Sprintf("%032x", rng.Uint64()), SyncID: fmt.Sprint(rng.Uint64())}
		if rng.IntN(6) != 0 {
			r.Pair.Boxes = map[model.MailboxGUID]replica.PairBoxState{}
			for _, m := range r.Mailboxes {
				r.Pair.Boxes[m.GUID] = replica.PairBoxState{Base: rng.Uint32(), Sent: rng.Uint64(), Epoch: rng.Uint64(), PeerEpoch: rng.Uint64()}
			}
		}
	}
	if rng.IntN(4) == 0 {
		r.Held = []replica.HeldInfo{{Mailbox: pick(), Count: int(rng.Int32())}}
	}
	if rng.IntN(2) == 0 {
		r.UIDValidity = rng.Uint32()
	}
	return r
}

// The fast begin-reply decoder gives what json.Unmarshal gives, for every
// reply json.Marshal writes (random ones, awkward names included), and
// refuses what it does not take (json.Unmarshal decides those).
func TestBeginReplyMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 17))
	fast := 0
	for n := 0; n < 2000; n++ {
		r := randBegin(rng)
		if fastAgrees(t, &r, BeginReply) {
			fast++
		}
	}
	if fast < 200 {
		t.Fatalf("only %d of 2000 replies took the fast way", fast)
	}
	g := `"00048bc8eef7bb834d3890620ad222e0"`
	for _, v := range []string{
		`{"Info":{}}`,
		`{"info":{"replica_id":"a\u0041"}}`,
		`{"info":{"replica_id":"a"}} `,
		`{"info":{"other":"a"}}`,
		`{"mailboxes":[{"guid":` + g + `,"name":"x","dir":".x"}]}`,
		`{"mailboxes":[{"guid":"zz"}]}`,
		`{"mailboxes":[{"uidnext":4294967296}]}`,
		`{"mailboxes":[{"uidnext":-1}]}`,
		`{"mailboxes":[{"messages":1.0}]}`,
		`{"mailboxes":[{"messages":01}]}`,
		`{"mailboxes":[{"deleted":1}]}`,
		`{"mailboxes":[{"name":"` + "\xff" + `"}]}`,
		`{"mailboxes":[{}],"mailboxes":[{}]}`,
		`{"subs":[],"subs":[]}`,
		`{"held":[],"held":[]}`,
		`{"subs":[{"name":"a","Sub":true}]}`,
		`{"held":[{"mailbox":"a","count":1e3}]}`,
		`{"pair":{"boxes":{` + g + `:{"base":1,"Sent":2}}}}`,
		`{"mailboxes":[{}]`,
		`{"mailboxes":[{}],}`,
		`{"other":1}`,
	} {
		var r replica.BeginReply
		if BeginReply([]byte(v), &r) {
			t.Errorf("fast decoder took %s: %+v", v, r)
		}
	}
	// Given twice: the last scalar wins, "info" and "pair" merge, as with
	// json.Unmarshal.
	for _, v := range []string{
		`{"info":{"replica_id":"a","index_id":"b"},"info":{"replica_id":"c"}}`,
		`{"pair":{"sync_id":"1","boxes":{` + g + `:{"base":1}}},"pair":{"peer_index_id":"p","boxes":{"10048bc8eef7bb834d3890620ad222e0":{"sent":2}}}}`,
		`{"mailboxes":[{"name":"a","name":"b","uidnext":3}]}`,
		`{"mailboxes":[],"subs":[],"held":[]}`,
		`{"mailboxes":null,"subs":null,"held":null,"pair":null}`,
		`{"pair":{"sync_id":"1"},"pair":null}`,
	} {
		var want, got replica.BeginReply
		if err := json.Unmarshal([]byte(v), &want); err != nil {
			t.Fatal(err)
		}
		if !BeginReply([]byte(v), &got) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: fast %+v, json %+v", v, got, want)
		}
	}
}

// The same for the apply reply.
func TestApplyResultMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 23))
	fast := 0
	for n := 0; n < 1000; n++ {
		r := replica.ApplyResult{Added: int(rng.Int32()), Linked: rng.IntN(5), Fetched: rng.IntN(5), Expunged: rng.IntN(5),
			Flagged: rng.IntN(5), Moved: rng.IntN(5), Bytes: randI64(rng), MailboxOps: rng.IntN(3), Changed: rng.IntN(4) == 0}
		switch rng.IntN(4) {
		case 0:
		case 1:
			r.Skipped = []string{names[rng.IntN(len(names))], "mailbox x: flag change"}
		}
		if rng.IntN(6) != 0 {
			r.Epochs = map[model.MailboxGUID]uint64{}
			for i := 0; i < rng.IntN(50); i++ {
				r.Epochs[randGUID(rng)] = rng.Uint64()
			}
		}
		if fastAgrees(t, &r, ApplyResult) {
			fast++
		}
	}
	if fast < 500 {
		t.Fatalf("only %d of 1000 replies took the fast way", fast)
	}
	g := `"00048bc8eef7bb834d3890620ad222e0"`
	for _, v := range []string{
		`{"skipped":[],"skipped":[]}`,
		`{"epochs":{"zz":1}}`,
		`{"epochs":{` + g + `:-1}}`,
		`{"epochs":{` + g + `:18446744073709551616}}`,
		`{"added":1.5}`,
		`{"Added":1}`,
		`{"changed":0}`,
		`{"other":1}`,
		`{"added":1}x`,
		`{"epochs":nul}`,
		`{"skipped":[],"skipped":null}`,
	} {
		var r replica.ApplyResult
		if ApplyResult([]byte(v), &r) {
			t.Errorf("fast decoder took %s: %+v", v, r)
		}
	}
	for _, v := range []string{
		`{"epochs":{` + g + `:1},"added":2,"epochs":{"10048bc8eef7bb834d3890620ad222e0":3},"added":4}`,
		`{"epochs":{` + g + `:1},"epochs":null}`,
		`{"epochs":null,"skipped":null}`,
	} {
		var want, got replica.ApplyResult
		if err := json.Unmarshal([]byte(v), &want); err != nil {
			t.Fatal(err)
		}
		if !ApplyResult([]byte(v), &got) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: fast %+v, json %+v", v, got, want)
		}
	}
}

func BenchmarkBeginReply(b *testing.B) {
	// As a 41-folder replica's begin reply.
	rng := rand.New(rand.NewPCG(1, 2))
	r := replica.BeginReply{Info: replica.Info{ReplicaID: "index-c0515ae0c0524f5a2fb07872622b362c", IndexID: "c0515ae0c0524f5a2fb07872622b362c", Root: "/srv/mail/b"},
		Subs: []model.Subscription{}, Pair: &replica.PairState{PeerIndexID: "04da866afdc128f15f0f81f500dc9fcb", SyncID: "9f2c", Boxes: map[model.MailboxGUID]replica.PairBoxState{}}}
	for i := 0; i < 41; i++ {
		m := model.Mailbox{GUID: randGUID(rng), Name: fmt.Sprintf("Folder%02d/Sub%02d", i, i+1), NameT: 1764380000000000000 + int64(i),
			UIDValidity: 1764380000, UIDNext: 2000, Modseq: 123456, Epoch: rng.Uint64(), Messages: 1300}
		r.Mailboxes = append(r.Mailboxes, m)
		r.Pair.Boxes[m.GUID] = replica.PairBoxState{Base: 2000, Sent: 123456, Epoch: m.Epoch, PeerEpoch: rng.Uint64()}
	}
	v, _ := json.Marshal(&r)
	b.Run("jsonfast", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var out replica.BeginReply
			if !BeginReply(v, &out) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var out replica.BeginReply
			if err := json.Unmarshal(v, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// guid parses what MailboxGUID.UnmarshalText parses, and nothing else.
func TestGUIDMatchesUnmarshalText(t *testing.T) {
	rng := rand.New(rand.NewPCG(29, 31))
	cases := []string{"", "00", "00048bc8eef7bb834d3890620ad222e0", "00048BC8EEF7BB834D3890620AD222E0", "00048bc8eef7bb834d3890620ad222e", "00048bc8eef7bb834d3890620ad222e0a", "00048bc8eef7bb834d3890620ad222eg", " 0048bc8eef7bb834d3890620ad222e0"}
	for i := 0; i < 200; i++ {
		g := randGUID(rng)
		cases = append(cases, g.String())
	}
	for _, c := range cases {
		var want, got model.MailboxGUID
		werr := want.UnmarshalText([]byte(c))
		ok := guid([]byte(c), &got)
		if ok != (werr == nil) || (ok && got != want) {
			t.Errorf("%q: guid %v %x, UnmarshalText %v %x", c, ok, got, werr, want)
		}
	}
}

// A changes chunk without records: the GUID json.Unmarshal finds; any
// other chunk is refused.
func TestEmptyChunk(t *testing.T) {
	type chunk struct {
		GUID       model.MailboxGUID `json:"guid"`
		Messages   []model.Message   `json:"messages,omitempty"`
		Tombstones []model.Tombstone `json:"tombstones,omitempty"`
	}
	rng := rand.New(rand.NewPCG(37, 41))
	for i := 0; i < 200; i++ {
		v, err := json.Marshal(chunk{GUID: randGUID(rng)})
		if err != nil {
			t.Fatal(err)
		}
		var want chunk
		if err := json.Unmarshal(v, &want); err != nil {
			t.Fatal(err)
		}
		var g model.MailboxGUID
		if !EmptyChunk(v, &g) || g != want.GUID || want.Messages != nil || want.Tombstones != nil {
			t.Fatalf("%s: fast %v %x, json %+v", v, EmptyChunk(v, &g), g, want)
		}
	}
	g := `"00048bc8eef7bb834d3890620ad222e0"`
	for _, v := range []string{`{}`, `{"GUID":` + g + `}`, `{"guid":` + g + `,"guid":` + g + `}`, `{"guid":` + g + `,"messages":[]}`,
		`{"guid":` + g + `,"tombstones":[{"uid":1}]}`, `{"guid":null}`, `{"guid":"zz"}`, `{"guid":` + g + `} `, `null`} {
		var g model.MailboxGUID
		if EmptyChunk([]byte(v), &g) {
			t.Errorf("took %s", v)
		}
	}
}

// fastAgrees marshals r with encoding/json and, when the fast decoder
// takes those bytes, checks that it decodes what json.Unmarshal does. It
// reports whether the fast decoder took them.
func fastAgrees[T any](t *testing.T, r *T, fast func([]byte, *T) bool) bool {
	t.Helper()
	v, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var want, got T
	if err := json.Unmarshal(v, &want); err != nil {
		t.Fatal(err)
	}
	if !fast(v, &got) {
		return false
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\nfast %+v\njson %+v", v, got, want)
	}
	return true
}
