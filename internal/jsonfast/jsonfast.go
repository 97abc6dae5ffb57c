// Package jsonfast decodes the JSON that json.Marshal writes for a few of
// the sync's records (mailbox records, saved peer state, the wire's begin
// and apply replies) about ten times faster than json.Unmarshal, which a
// no-change sync otherwise pays for every mailbox on both sides.
//
// Every decoder here takes only what json.Marshal itself writes: no white
// space, strings without escapes, control characters or invalid UTF-8,
// integers without fraction or exponent, keys spelled exactly as the
// struct tags (json.Unmarshal also takes other cases), null only where
// said. Anything
// else makes it report false, and the caller then decodes with
// json.Unmarshal into a fresh value: wherever a decoder here reports true,
// its result equals json.Unmarshal's (the tests in this package and in
// package index compare them on random records).
package jsonfast

import (
	"encoding/hex"
	"strconv"
	"unicode/utf8"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// Parser reads one JSON value from a byte slice.
type Parser struct {
	s []byte
	i int
}

// New returns a parser of v.
func New(v []byte) *Parser { return &Parser{s: v} }

// End reports whether all of the input was read.
func (p *Parser) End() bool { return p.i == len(p.s) }

// Object reads a JSON object, calling field for each key with the parser
// at the key's value (field reads the value and reports whether it could).
func (p *Parser) Object(field func(key []byte) bool) bool {
	if !p.lit('{') {
		return false
	}
	if p.lit('}') {
		return true
	}
	for {
		key, ok := p.Str()
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

// Array reads a JSON array (not null), calling elem for each element with
// the parser at it.
func (p *Parser) Array(elem func() bool) bool {
	if !p.lit('[') {
		return false
	}
	if p.lit(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if p.lit(']') {
			return true
		}
		if !p.lit(',') {
			return false
		}
	}
}

func (p *Parser) lit(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// Null reads null if it is next, and reports whether it was (json.Unmarshal
// makes a slice, map or pointer nil for it).
func (p *Parser) Null() bool {
	if len(p.s)-p.i >= 4 && string(p.s[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

// Str reads a string without escapes, control characters or invalid
// UTF-8 (json.Unmarshal would change those).
func (p *Parser) Str() ([]byte, bool) {
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

// StrTo reads a string into dst.
func (p *Parser) StrTo(dst *string) bool {
	s, ok := p.Str()
	if ok {
		*dst = string(s)
	}
	return ok
}

// GUIDTo reads a mailbox GUID (a string, as its MarshalText writes it).
func (p *Parser) GUIDTo(dst *model.MailboxGUID) bool {
	s, ok := p.Str()
	return ok && guid(s, dst)
}

// guid is dst.UnmarshalText(s) == nil (32 hex digits, either case)
// without its two copies of s; on false dst is not to be used.
func guid(s []byte, dst *model.MailboxGUID) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.Decode(dst[:], s)
	return err == nil
}

// num returns the bytes of a JSON integer (optional '-', digits, no
// leading zero), or false (fractions and exponents included).
func (p *Parser) num() ([]byte, bool) {
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

// Int64To reads an integer into dst.
func (p *Parser) Int64To(dst *int64) bool {
	s, ok := p.num()
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(string(s), 10, 64)
	*dst = n
	return err == nil
}

// IntTo reads an integer into dst.
func (p *Parser) IntTo(dst *int) bool {
	s, ok := p.num()
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(string(s), 10, strconv.IntSize)
	*dst = int(n)
	return err == nil
}

// Uint64To reads a non-negative integer into dst.
func (p *Parser) Uint64To(dst *uint64) bool {
	s, ok := p.num()
	if !ok || s[0] == '-' {
		return false
	}
	n, err := strconv.ParseUint(string(s), 10, 64)
	*dst = n
	return err == nil
}

// Uint32To reads a non-negative integer below 2^32 into dst.
func (p *Parser) Uint32To(dst *uint32) bool {
	s, ok := p.num()
	if !ok || s[0] == '-' {
		return false
	}
	n, err := strconv.ParseUint(string(s), 10, 32)
	*dst = uint32(n)
	return err == nil
}

// BoolTo reads true or false into dst.
func (p *Parser) BoolTo(dst *bool) bool {
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

// Strings reads an array of strings (not null) into dst.
func (p *Parser) Strings(dst *[]string) bool {
	out := []string{}
	if !p.Array(func() bool {
		s, ok := p.Str()
		out = append(out, string(s))
		return ok
	}) {
		return false
	}
	*dst = out
	return true
}

// MailboxField reads the value of key into the field of m it names. It
// reports known=false for a key that is not a field of model.Mailbox.
func (p *Parser) MailboxField(key []byte, m *model.Mailbox) (known, ok bool) {
	switch string(key) {
	case "guid":
		return true, p.GUIDTo(&m.GUID)
	case "merged_into":
		return true, p.GUIDTo(&m.MergedInto)
	case "name":
		return true, p.StrTo(&m.Name)
	case "special":
		return true, p.StrTo(&m.Special)
	case "name_t":
		return true, p.Int64To(&m.NameT)
	case "deleted_t":
		return true, p.Int64To(&m.DeletedT)
	case "uidvalidity":
		return true, p.Uint32To(&m.UIDValidity)
	case "uidnext":
		return true, p.Uint32To(&m.UIDNext)
	case "modseq":
		return true, p.Uint64To(&m.Modseq)
	case "epoch":
		return true, p.Uint64To(&m.Epoch)
	case "messages":
		return true, p.IntTo(&m.Messages)
	case "deleted":
		return true, p.BoolTo(&m.Deleted)
	case "missing":
		return true, p.BoolTo(&m.Missing)
	}
	return false, false
}

// PairState reads a saved peer state into ps (a key of "boxes" given
// twice: the last one wins whole, as with json.Unmarshal; a second
// "boxes" adds to the map, as json.Unmarshal does).
func (p *Parser) PairState(ps *replica.PairState) bool {
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "peer_index_id":
			return p.StrTo(&ps.PeerIndexID)
		case "sync_id":
			return p.StrTo(&ps.SyncID)
		case "boxes":
			return p.pairBoxes(ps)
		}
		return false
	})
}

func (p *Parser) pairBoxes(ps *replica.PairState) bool {
	if ps.Boxes == nil {
		ps.Boxes = map[model.MailboxGUID]replica.PairBoxState{}
	}
	// (null is not an object: the long way)
	return p.Object(func(key []byte) bool {
		var g model.MailboxGUID
		if !guid(key, &g) {
			return false
		}
		var bs replica.PairBoxState
		if !p.pairBox(&bs) {
			return false
		}
		ps.Boxes[g] = bs
		return true
	})
}

func (p *Parser) pairBox(bs *replica.PairBoxState) bool {
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "base":
			return p.Uint32To(&bs.Base)
		case "sent":
			return p.Uint64To(&bs.Sent)
		case "epoch":
			return p.Uint64To(&bs.Epoch)
		case "peer_epoch":
			return p.Uint64To(&bs.PeerEpoch)
		}
		return false
	})
}
