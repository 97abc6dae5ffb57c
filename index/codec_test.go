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

func FuzzDecodeMsg(f *testing.F) {
	f.Add(encodeMsg(&Msg{Message: model.Message{UID: 3, GUID: "g", Flags: model.Flags{"a": {Set: true, T: 1}}}, File: "f"}))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b)
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
