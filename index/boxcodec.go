package index

import (
	"strconv"
	"unicode/utf8"

	"github.com/twinbox-mail/twinbox/model"
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
	p := boxParser{s: v}
	return p.object(func(key []byte) bool {
		ok := false
		switch string(key) {
		case "guid", "merged_into":
			s, sok := p.str()
			g := &b.GUID
			if string(key) == "merged_into" {
				g = &b.MergedInto
			}
			ok = sok && g.UnmarshalText(s) == nil
		case "name":
			ok = p.strTo(&b.Name)
		case "special":
			ok = p.strTo(&b.Special)
		case "dir":
			ok = p.strTo(&b.Dir)
		case "name_t":
			ok = p.int64To(&b.NameT)
		case "deleted_t":
			ok = p.int64To(&b.DeletedT)
		case "revived":
			ok = p.int64To(&b.Revived)
		case "uidvalidity":
			ok = p.uint32To(&b.UIDValidity)
		case "uidnext":
			ok = p.uint32To(&b.UIDNext)
		case "modseq":
			ok = p.uint64To(&b.Modseq)
		case "epoch":
			ok = p.uint64To(&b.Epoch)
		case "messages":
			ok = p.intTo(&b.Messages)
		case "held":
			ok = p.intTo(&b.Held)
		case "deleted":
			ok = p.boolTo(&b.Deleted)
		case "missing":
			ok = p.boolTo(&b.Missing)
		case "keywords":
			ok = p.strings(&b.Keywords)
		case "stamp":
			ok = p.stamp(&b.Stamp)
		}
		return ok
	}) && p.end()
}

type boxParser struct {
	s []byte
	i int
}

func (p *boxParser) end() bool { return p.i == len(p.s) }

// object reads a JSON object, calling field for each key with the parser
// at the key's value (field reads the value and reports whether it could).
func (p *boxParser) object(field func(key []byte) bool) bool {
	if !p.lit('{') {
		return false
	}
	if p.lit('}') {
		return true
	}
	for {
		key, ok := p.str()
		if !ok || !p.lit(':') || !field(key) {
			return false
		}
		if p.lit('}') {
			return true
		}
		if !p.lit(',') {
			return false
		}
	}
}

func (p *boxParser) lit(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string without escapes, control characters or invalid
// UTF-8 (json.Unmarshal would change those).
func (p *boxParser) str() ([]byte, bool) {
	if !p.lit('"') {
		return nil, false
	}
	start := p.i
	ascii := true
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
		p.i++
	}
	return nil, false
}

func (p *boxParser) strTo(dst *string) bool {
	s, ok := p.str()
	if ok {
		*dst = string(s)
	}
	return ok
}

// num returns the bytes of a JSON integer (optional '-', digits, no
// leading zero), or false (fractions and exponents included).
func (p *boxParser) num() ([]byte, bool) {
	start := p.i
	p.lit('-')
	d := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if p.i == d || (p.s[d] == '0' && p.i-d > 1) {
		return nil, false
	}
	if p.i < len(p.s) && (p.s[p.i] == '.' || p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		return nil, false
	}
	return p.s[start:p.i], true
}

func (p *boxParser) int64To(dst *int64) bool {
	s, ok := p.num()
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(string(s), 10, 64)
	*dst = n
	return err == nil
}

func (p *boxParser) intTo(dst *int) bool {
	s, ok := p.num()
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(string(s), 10, strconv.IntSize)
	*dst = int(n)
	return err == nil
}

func (p *boxParser) uint64To(dst *uint64) bool {
	s, ok := p.num()
	if !ok || s[0] == '-' {
		return false
	}
	n, err := strconv.ParseUint(string(s), 10, 64)
	*dst = n
	return err == nil
}

func (p *boxParser) uint32To(dst *uint32) bool {
	s, ok := p.num()
	if !ok || s[0] == '-' {
		return false
	}
	n, err := strconv.ParseUint(string(s), 10, 32)
	*dst = uint32(n)
	return err == nil
}

func (p *boxParser) boolTo(dst *bool) bool {
	switch {
	case len(p.s)-p.i >= 4 && string(p.s[p.i:p.i+4]) == "true":
		p.i += 4
		*dst = true
	case len(p.s)-p.i >= 5 && string(p.s[p.i:p.i+5]) == "false":
		p.i += 5
		*dst = false
	default:
		return false
	}
	return true
}

func (p *boxParser) strings(dst *[]string) bool {
	if !p.lit('[') {
		return false // (null included: the long way)
	}
	out := []string{}
	if !p.lit(']') {
		for {
			s, ok := p.str()
			if !ok {
				return false
			}
			out = append(out, string(s))
			if p.lit(']') {
				break
			}
			if !p.lit(',') {
				return false
			}
		}
	}
	*dst = out
	return true
}

func (p *boxParser) stamp(st *Stamp) bool {
	return p.object(func(key []byte) bool {
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
		default:
			return false // json.Unmarshal also matches keys without regard to case
		}
		return p.int64To(dst)
	})
}

// decodePairFast decodes a saved peer state (replica.PairState) as
// json.Marshal writes it, the way decodeBoxFast does a mailbox record: a
// sync reads it on both sides, and its per-mailbox map cost json.Unmarshal
// more than all the mailbox records together. It reports false for
// anything else; the caller then uses json.Unmarshal on a fresh value
// (TestDecodePairFastMatchesJSON).
func decodePairFast(v []byte, ps *replica.PairState) bool {
	p := boxParser{s: v}
	return p.object(func(key []byte) bool {
		switch string(key) {
		case "peer_index_id":
			return p.strTo(&ps.PeerIndexID)
		case "sync_id":
			return p.strTo(&ps.SyncID)
		case "boxes":
			return p.pairBoxes(ps)
		}
		return false
	}) && p.end()
}

func (p *boxParser) pairBoxes(ps *replica.PairState) bool {
	if ps.Boxes == nil {
		ps.Boxes = map[model.MailboxGUID]replica.PairBoxState{}
	}
	// (null is not an object: the long way)
	return p.object(func(key []byte) bool {
		var g model.MailboxGUID
		if g.UnmarshalText(key) != nil {
			return false
		}
		var bs replica.PairBoxState // (a key given twice: the last wins whole)
		if !p.pairBox(&bs) {
			return false
		}
		ps.Boxes[g] = bs
		return true
	})
}

func (p *boxParser) pairBox(bs *replica.PairBoxState) bool {
	return p.object(func(key []byte) bool {
		switch string(key) {
		case "base":
			return p.uint32To(&bs.Base)
		case "sent":
			return p.uint64To(&bs.Sent)
		case "epoch":
			return p.uint64To(&bs.Epoch)
		case "peer_epoch":
			return p.uint64To(&bs.PeerEpoch)
		}
		return false
	})
}
