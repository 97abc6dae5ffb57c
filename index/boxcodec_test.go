package index

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

// The fast mailbox-record decoder gives what json.Unmarshal gives, for
// every record json.Marshal writes (random ones, awkward names included),
// and hands whatever it does not take (escapes, other spellings, bad
// numbers) to json.Unmarshal.
func TestDecodeBoxFastMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	names := []string{"INBOX", "Folder09", "Entw&APw-rfe", "Entwürfe", `quote"d`, `back\slash`, "tab\there", "<html>&", "日本語/子", "", " spaced ", "\u2028"}
	pick := func() string { return names[rng.IntN(len(names))] }
	i64 := func() int64 {
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
	fast := 0
	for n := 0; n < 3000; n++ {
		var b Box
		for i := range b.GUID {
			b.GUID[i] = byte(rng.IntN(256))
		}
		b.Name, b.NameT = pick(), i64()
		b.UIDValidity, b.UIDNext = rng.Uint32(), rng.Uint32()
		b.Modseq, b.Epoch = rng.Uint64(), rng.Uint64()
		if rng.IntN(4) == 0 {
			b.Deleted, b.DeletedT = true, i64()
		}
		if rng.IntN(4) == 0 {
			b.Special = `\Trash`
		}
		b.Messages, b.Missing = int(rng.Int32()), rng.IntN(5) == 0
		if rng.IntN(5) == 0 {
			for i := range b.MergedInto {
				b.MergedInto[i] = byte(rng.IntN(256))
			}
		}
		b.Dir = "." + pick()
		switch rng.IntN(4) {
		case 0:
			b.Keywords = []string{"$Forwarded", pick()}
		case 1:
			b.Keywords = []string{}
		}
		b.Revived, b.Held = i64(), rng.IntN(3)
		b.Stamp = Stamp{Cur: i64(), New: i64(), Uidlist: i64(), Keywords: i64(), UidlistSize: i64(), UidlistIno: i64(), Racy: uint8(rng.IntN(2) * rng.IntN(8))}
		v, err := json.Marshal(&b)
		if err != nil {
			t.Fatal(err)
		}
		var want, got Box
		if err := json.Unmarshal(v, &want); err != nil {
			t.Fatal(err)
		}
		if decodeBoxFast(v, &got) {
			fast++
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s:\nfast %+v\njson %+v", v, got, want)
			}
		}
		// decodeBox itself, through the cache.
		boxCache.m = nil
		d, err := decodeBox(v)
		if err != nil || !reflect.DeepEqual(*d, want) {
			t.Fatalf("decodeBox(%s) = %+v, %v", v, d, err)
		}
	}
	if fast < 300 {
		t.Fatalf("only %d of 3000 records took the fast way", fast)
	}
	// Records the fast way must refuse (json.Unmarshal decides).
	for _, v := range []string{
		`{"guid":"00048bc8eef7bb834d3890620ad222e0","name":"a\u00e9"}`,
		`{"GUID":"00048bc8eef7bb834d3890620ad222e0"}`,
		`{"guid":"00048bc8eef7bb834d3890620ad222e0", "name":"x"}`,
		`{"uidnext":4294967296}`,
		`{"uidnext":-1}`,
		`{"messages":1.0}`,
		`{"messages":01}`,
		`{"keywords":null}`,
		`{"stamp":{"cur":5}}`,
		`{"name":"x"}x`,
		`{"name":"` + "\xff" + `"}`,
		`{"deleted":1}`,
		`{"other":1}`,
	} {
		var b Box
		if decodeBoxFast([]byte(v), &b) {
			t.Errorf("fast decoder took %s: %+v", v, b)
		}
	}
	var empty Box
	if !decodeBoxFast([]byte(`{}`), &empty) || !reflect.DeepEqual(empty, Box{}) {
		t.Errorf("{} -> %+v", empty)
	}
}

func BenchmarkDecodeBox(b *testing.B) {
	v := []byte(`{"guid":"00048bc8eef7bb834d3890620ad222e0","name":"Folder09","name_t":1795889077186882100,"uidvalidity":1795889077,"uidnext":1268,"modseq":1267,"epoch":6059887500001123969,"messages":1267,"dir":".Folder09","stamp":{"Cur":1795889078340855517,"New":1795889078136855505,"Uidlist":1795889078343581478,"Keywords":-1,"UidlistSize":63667,"UidlistIno":5498339}}`)
	for i := 0; i < b.N; i++ {
		boxCache.m = nil
		if _, err := decodeBox(v); err != nil {
			b.Fatal(err)
		}
	}
}

// The fast peer-state decoder gives what json.Unmarshal gives for every
// state json.Marshal writes, and refuses the rest.
func TestDecodePairFastMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	fast := 0
	for n := 0; n < 500; n++ {
		ps := replica.PairState{PeerIndexID: fmt.Sprintf("%032x", rng.Uint64()), SyncID: fmt.Sprint(rng.Uint64())}
		if rng.IntN(5) == 0 {
			ps.PeerIndexID = `odd "id"\` // escapes: the long way
		}
		switch k := rng.IntN(6); k {
		case 0: // nil map: "boxes":null
		case 1:
			ps.Boxes = map[model.MailboxGUID]replica.PairBoxState{}
		default:
			ps.Boxes = map[model.MailboxGUID]replica.PairBoxState{}
			for i := 0; i < rng.IntN(60); i++ {
				var g model.MailboxGUID
				for j := range g {
					g[j] = byte(rng.IntN(256))
				}
				bs := replica.PairBoxState{Base: rng.Uint32(), Sent: rng.Uint64(), Epoch: rng.Uint64(), PeerEpoch: rng.Uint64()}
				if rng.IntN(3) == 0 {
					bs = replica.PairBoxState{Base: math.MaxUint32, Sent: math.MaxUint64}
				}
				ps.Boxes[g] = bs
			}
		}
		v, err := json.Marshal(&ps)
		if err != nil {
			t.Fatal(err)
		}
		var want, got replica.PairState
		if err := json.Unmarshal(v, &want); err != nil {
			t.Fatal(err)
		}
		if decodePairFast(v, &got) {
			fast++
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s:\nfast %+v\njson %+v", v, got, want)
			}
		}
	}
	if fast < 200 {
		t.Fatalf("only %d of 500 states took the fast way", fast)
	}
	g := `"00048bc8eef7bb834d3890620ad222e0"`
	for _, v := range []string{
		`{"boxes":null}`,
		`{"Boxes":{}}`,
		`{"boxes":{` + g + `:{"base":1,"Sent":2}}}`,
		`{"boxes":{` + g + `:{"base":-1}}}`,
		`{"boxes":{` + g + `:{"base":4294967296}}}`,
		`{"boxes":{` + g + `:{"sent":1.5}}}`,
		`{"boxes":{"00048BC8EEF7BB834D3890620AD222E0x":{}}}`,
		`{"boxes":{"zz":{}}}`,
		`{"sync_id":"a"} `,
		`{"sync_id":"a\u0041"}`,
		`{"other":1}`,
	} {
		var ps replica.PairState
		if decodePairFast([]byte(v), &ps) {
			t.Errorf("fast decoder took %s: %+v", v, ps)
		}
	}
	// A key given twice: the last one wins whole, as with json.Unmarshal.
	v := []byte(`{"boxes":{` + g + `:{"base":1,"sent":2},` + g + `:{"epoch":3}}}`)
	var want, got replica.PairState
	if err := json.Unmarshal(v, &want); err != nil {
		t.Fatal(err)
	}
	if !decodePairFast(v, &got) || !reflect.DeepEqual(got, want) {
		t.Errorf("duplicate key: fast %+v, json %+v", got, want)
	}
}
