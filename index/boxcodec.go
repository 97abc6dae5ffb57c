package index

import (
	"github.com/twinbox-mail/twinbox/internal/jsonfast"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// decodeBoxFast decodes a mailbox record as json.Marshal writes it (no
// white space, strings without escapes) about ten times faster than
// json.Unmarshal, which a no-change sync otherwise pays for every mailbox
// on both sides. It reports false for anything else (an escape, an unknown
// field, a number out of range...): the caller then uses json.Unmarshal,
// whose result this one equals wherever it reports true
// (TestDecodeBoxFastMatchesJSON).
func decodeBoxFast(v []byte, b *Box) bool {
	p := jsonfast.New(v)
	return p.Object(func(key []byte) bool {
		if known, ok := p.MailboxField(key, &b.Mailbox); known {
			return ok
		}
		switch string(key) {
		case "dir":
			return p.StrTo(&b.Dir)
		case "revived":
			return p.Int64To(&b.Revived)
		case "held":
			return p.IntTo(&b.Held)
		case "keywords":
			return p.Strings(&b.Keywords) // (null included: the long way)
		case "stamp":
			return stamp(p, &b.Stamp)
		}
		return false
	}) && p.End()
}

func stamp(p *jsonfast.Parser, st *Stamp) bool {
	return p.Object(func(key []byte) bool {
		var dst *int64
		switch string(key) {
		case "Cur":
			dst = &st.Cur
		case "New":
			dst = &st.New
		case "Uidlist":
			dst = &st.Uidlist
		case "Keywords":
			dst = &st.Keywords
		case "UidlistSize":
			dst = &st.UidlistSize
		case "UidlistIno":
			dst = &st.UidlistIno
		case "Racy":
			var v int64
			if !p.Int64To(&v) || v < 0 || v > 255 {
				return false
			}
			st.Racy = uint8(v)
			return true
		default:
			return false // json.Unmarshal also matches keys without regard to case
		}
		return p.Int64To(dst)
	})
}

// decodePairFast decodes a saved peer state (replica.PairState) as
// json.Marshal writes it, the way decodeBoxFast does a mailbox record: a
// sync reads it on both sides, and its per-mailbox map cost json.Unmarshal
// more than all the mailbox records together. It reports false for
// anything else; the caller then uses json.Unmarshal on a fresh value
// (TestDecodePairFastMatchesJSON).
func decodePairFast(v []byte, ps *replica.PairState) bool {
	p := jsonfast.New(v)
	return p.PairState(ps) && p.End()
}
