package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/twinbox-mail/twinbox/model"
)

// Message records are the bulk of an index, so they are stored in a small
// binary form rather than JSON: a version byte, then uvarints and
// length-prefixed strings in a fixed order. Flags are sorted by name.
//
//	v1: 0x01 uid size vsize mtime(zigzag) modseq bits guid base file nflags {name set T(zigzag)}...
//	v2: 0x02 as v1, then born(zigzag)
const (
	msgCodecV1 = 1
	msgCodecV2 = 2
)

var errCodec = errors.New("malformed message record")

func encodeMsg(m *Msg) []byte {
	b := make([]byte, 0, 64+len(m.GUID)+len(m.Base)+len(m.File)+16*len(m.Flags))
	b = append(b, msgCodecV2)
	b = binary.AppendUvarint(b, uint64(m.UID))
	b = binary.AppendUvarint(b, uint64(max(m.Size, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.VSize, 0)))
	b = binary.AppendVarint(b, m.Mtime)
	b = binary.AppendUvarint(b, m.Modseq)
	var bits uint64
	if m.New {
		bits |= 1
	}
	if m.Held {
		bits |= 2
	}
	b = binary.AppendUvarint(b, bits)
	for _, s := range []string{m.GUID, m.Base, m.File} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	names := make([]string, 0, len(m.Flags))
	for n := range m.Flags {
		names = append(names, n)
	}
	sort.Strings(names)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, n := range names {
		v := m.Flags[n]
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		if v.Set {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = binary.AppendVarint(b, v.T)
	}
	return binary.AppendVarint(b, m.Born)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uv() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCodec
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) v() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCodec
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uv()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errCodec
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) byte1() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errCodec
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func decodeMsg(v []byte) (*Msg, error) { return decodeMsgShared(v, nil) }

// flagCache lets records with the same encoded flags share one Flags map
// (flag maps are values: nobody changes one in place). A full read of a
// large mailbox then holds one map per distinct flag set, not one per
// message: most records of a first sync carry the same few sets.
type flagCache map[string]model.Flags

// flagCacheMax bounds a flagCache: flags changed locally carry their own
// stamps and make sets that no other record shares.
const flagCacheMax = 4096

// decodeMsgShared is decodeMsg taking Flags maps from fc (if not nil).
func decodeMsgShared(v []byte, fc flagCache) (*Msg, error) {
	if len(v) == 0 || (v[0] != msgCodecV1 && v[0] != msgCodecV2) {
		return nil, fmt.Errorf("%w: unknown version", errCodec)
	}
	r := &reader{b: v[1:]}
	m := &Msg{}
	uid := r.uv()
	if uid > math.MaxUint32 {
		return nil, errCodec
	}
	m.UID = uint32(uid)
	m.Size = int64(r.uv())
	m.VSize = int64(r.uv())
	m.Mtime = r.v()
	m.Modseq = r.uv()
	bits := r.uv()
	m.New, m.Held = bits&1 != 0, bits&2 != 0
	m.GUID = r.str()
	m.Base = r.str()
	m.File = r.str()
	start := r.b
	nf := r.uv()
	if nf > uint64(len(r.b)) {
		return nil, errCodec
	}
	var sec []byte // the encoded flags, when fc is to be asked
	if fc != nil && nf > 0 && r.err == nil {
		body := r.b
		for i := uint64(0); i < nf && r.err == nil; i++ {
			n := r.uv()
			if r.err != nil || n > uint64(len(r.b)) {
				r.err = errCodec
				break
			}
			r.b = r.b[n:]
			r.byte1()
			r.v()
		}
		if r.err != nil {
			return nil, r.err
		}
		sec = start[:len(start)-len(r.b)]
		if f, ok := fc[string(sec)]; ok {
			m.Flags, nf = f, 0
		} else {
			r.b = body // read them again, into a map
		}
	}
	if nf > 0 {
		m.Flags = make(model.Flags, nf)
	}
	for i := uint64(0); i < nf && r.err == nil; i++ {
		name := r.str()
		set := r.byte1() == 1
		m.Flags[name] = model.FlagVal{Set: set, T: r.v()}
	}
	if sec != nil && nf > 0 && r.err == nil && len(fc) < flagCacheMax {
		fc[string(sec)] = m.Flags
	}
	if v[0] == msgCodecV2 {
		m.Born = r.v()
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// msgPeek is the part of a message record a scan compares with the disk,
// read without allocating: the slices point into the record.
type msgPeek struct {
	uid              uint32
	guid, base, file []byte
	new, held        bool
}

// peekMsg reads the fixed leading fields of a record (both versions).
func peekMsg(v []byte) (msgPeek, bool) {
	var p msgPeek
	if len(v) == 0 || (v[0] != msgCodecV1 && v[0] != msgCodecV2) {
		return p, false
	}
	b := v[1:]
	uv := func() uint64 {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			return 0
		}
		b = b[n:]
		return x
	}
	str := func() []byte {
		n := uv()
		if b == nil || n > uint64(len(b)) {
			b = nil
			return nil
		}
		s := b[:n:n]
		b = b[n:]
		return s
	}
	uid := uv()
	uv() // size
	uv() // vsize
	if b != nil {
		if _, n := binary.Varint(b); n > 0 {
			b = b[n:]
		} else {
			b = nil
		}
	}
	uv() // modseq
	bits := uv()
	p.guid, p.base, p.file = str(), str(), str()
	if b == nil || uid > math.MaxUint32 {
		return msgPeek{}, false
	}
	p.uid, p.new, p.held = uint32(uid), bits&1 != 0, bits&2 != 0
	return p, true
}
