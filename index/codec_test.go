package index

import (
	"reflect"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
)

func TestMsgCodecRoundTrip(t *testing.T) {
	for _, m := range []*Msg{
		{},
		{Message: model.Message{UID: 1, GUID: "g"}},
		{Message: model.Message{UID: 4294967295, GUID: "1700000000.M1P2.host,S=12", Base: "b", Size: 12, VSize: 14, Mtime: -5, Modseq: 99, New: true, Held: true, Born: 1700000000123,
			Flags: model.Flags{`\Seen`: {Set: true, T: 7}, "$Label1": {Set: false, T: -3}}}, File: "x:2,S"},
	} {
		got, err := decodeMsg(encodeMsg(m))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
	}
}

// A flag cache gives records with the same flags one map, and decodes
// exactly what decodeMsg does.
func TestDecodeMsgSharedFlags(t *testing.T) {
	seen := model.Flags{`\Seen`: {Set: true}}
	recs := []*Msg{
		{Message: model.Message{UID: 1, GUID: "a", Flags: seen}},
		{Message: model.Message{UID: 2, GUID: "b", Flags: model.Flags{`\Seen`: {Set: true}}}},
		{Message: model.Message{UID: 3, GUID: "c", Flags: model.Flags{`\Seen`: {Set: true, T: 5}}}},
		{Message: model.Message{UID: 4, GUID: "d"}},
		{Message: model.Message{UID: 5, GUID: "e", Flags: model.Flags{`\Seen`: {Set: true}, `\Flagged`: {Set: false, T: 2}}}, File: "x"},
	}
	fc := flagCache{}
	var got []*Msg
	for _, m := range recs {
		g, err := decodeMsgShared(encodeMsg(m), fc)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, m) {
			t.Fatalf("shared decode:\n got %+v\nwant %+v", g, m)
		}
		got = append(got, g)
	}
	if reflect.ValueOf(got[0].Flags).UnsafePointer() != reflect.ValueOf(got[1].Flags).UnsafePointer() {
		t.Fatal("records with the same flags got two maps")
	}
	if reflect.ValueOf(got[0].Flags).UnsafePointer() == reflect.ValueOf(got[2].Flags).UnsafePointer() {
		t.Fatal("records with different flag stamps share a map")
	}
	if len(fc) != 3 {
		t.Fatalf("cache holds %d flag sets, want 3", len(fc))
	}
	// A record cut inside its flags fails as with decodeMsg.
	b := encodeMsg(recs[4])
	for i := 1; i < len(b); i++ {
		_, err1 := decodeMsg(b[:i])
		_, err2 := decodeMsgShared(b[:i], fc)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("cut at %d: decodeMsg %v, shared %v", i, err1, err2)
		}
	}
}

func FuzzDecodeMsg(f *testing.F) {
	f.Add(encodeMsg(&Msg{Message: model.Message{UID: 3, GUID: "g", Flags: model.Flags{"a": {Set: true, T: 1}}}, File: "f"}))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b)
		if ms, err2 := decodeMsgShared(b, flagCache{}); (err == nil) != (err2 == nil) || (err == nil && !reflect.DeepEqual(m, ms)) {
			t.Fatalf("shared decode differs: %v / %v\n%+v\n%+v", err, err2, m, ms)
		}
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		m2, err := decodeMsg(encodeMsg(m))
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, m, m2)
		}
	})
}
