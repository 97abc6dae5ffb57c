package index

import (
	"testing"

	"github.com/twinbox-mail/twinbox/model"
)

func TestPeekMsgMatchesDecode(t *testing.T) {
	for _, m := range []*Msg{
		{Message: model.Message{UID: 7, GUID: "g1", Size: 10, VSize: 12, Mtime: -5, Modseq: 300, New: true}, File: "1.M2P3.h,S=10"},
		{Message: model.Message{UID: 1 << 31, GUID: "gg", Base: "b", Held: true, Flags: model.Flags{`\Seen`: {Set: true, T: 9}}, Born: 4}, File: "b:2,S"},
		{Message: model.Message{UID: 1}},
	} {
		v := encodeMsg(m)
		p, ok := peekMsg(v)
		if !ok || p.uid != m.UID || string(p.guid) != m.GUID || string(p.base) != m.Base || string(p.file) != m.File || p.new != m.New || p.held != m.Held {
			t.Fatalf("peek of %+v = %+v, %v", m, p, ok)
		}
		// A cut record is refused, or (cut after the file name) read right.
		for i := 0; i < len(v); i++ {
			q, ok := peekMsg(v[:i])
			if ok && (q.uid != p.uid || string(q.guid) != m.GUID || string(q.base) != m.Base || string(q.file) != m.File || q.new != p.new || q.held != p.held) {
				t.Fatalf("peek of a record cut at %d of %d = %+v", i, len(v), q)
			}
		}
	}
}
