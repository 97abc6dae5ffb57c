package maildir

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// UidlistName is the file name of the UID list in a mailbox directory.
const UidlistName = "dovecot-uidlist"

// Uidlist is a parsed dovecot-uidlist file.
//
// Version 3 (Dovecot 1.1 and later):
//
//	3 V<uidvalidity> N<nextuid> G<mailbox-guid> [<key><value> ...]
//	<uid> [<key><value> ...] :<filename>
//
// Version 1 (Courier-compatible, read only):
//
//	1 <uidvalidity> <nextuid>
//	<uid> <filename>
type Uidlist struct {
	Version     int         // 3 or 1 as read; always written as 3
	UIDValidity uint32      // "V"
	NextUID     uint32      // "N"
	GUID        [16]byte    // mailbox GUID ("G", 32 hex digits); zero when absent
	Header      []Ext       // other header fields, in order (e.g. P)
	Records     []UidRecord // strictly ascending UID
}

// Ext is one "<key><value>" field of the header or of a record.
type Ext struct {
	Key   byte
	Value string
}

// UidRecord is one message line of the UID list.
type UidRecord struct {
	UID uint32
	// Ext holds the record's extension fields in order: keys 'A'..'Z',
	// e.g. S (size), W (virtual size), G (message GUID when it is not the
	// base name), P (POP3 UIDL), O (POP3 order).
	Ext []Ext
	// FileName is the file name as the list has it: current Dovecot
	// writes only the base name, older versions the whole name with flags
	// (which may be stale). Marshal writes the part before ":".
	FileName string
}

// Get returns the value of the first extension field with key.
func (r UidRecord) Get(key byte) (string, bool) {
	for _, e := range r.Ext {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// Set sets extension field key to v, in place if it exists (later duplicates
// are removed), else at the end. It builds a new slice, so copies of the
// record keep their fields.
func (r *UidRecord) Set(key byte, v string) {
	found := false
	out := make([]Ext, 0, len(r.Ext)+1)
	for _, e := range r.Ext {
		if e.Key == key {
			if found {
				continue
			}
			e.Value = v
			found = true
		}
		out = append(out, e)
	}
	if !found {
		out = append(out, Ext{Key: key, Value: v})
	}
	r.Ext = out
}

// Delete removes every extension field with key (into a new slice, like
// Set).
func (r *UidRecord) Delete(key byte) {
	var out []Ext
	for _, e := range r.Ext {
		if e.Key != key {
			out = append(out, e)
		}
	}
	r.Ext = out
}

// Base is the record's file name up to the first ":", the message's
// identity in the mailbox.
func (r UidRecord) Base() string {
	b, _, _ := strings.Cut(r.FileName, ":")
	return b
}

// GUID returns the message GUID: the G field if present, else the base name
// (Dovecot's rule).
func (r UidRecord) GUID() string {
	if g, ok := r.Get('G'); ok && g != "" {
		return g
	}
	return r.Base()
}

func uidlistErr(line int, format string, args ...any) error {
	return &ParseError{File: UidlistName, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// ParseUidlist parses a dovecot-uidlist file, following Dovecot's reader
// (maildir-uidlist.c):
//
//   - A last line without "\n" is ignored: Dovecot appends records to the
//     file in place (under the lock), so an unlocked reader can see a line
//     being written. A "\r" before "\n" is dropped.
//   - The header's version is one digit followed by a space; 1 and 3 are
//     supported. UIDVALIDITY and NEXTUID must be non-zero decimal numbers;
//     G must be 32 hex digits. Other header fields are kept in Header.
//   - UIDs must be non-zero, below 2^32-1 and strictly ascending. A UID at
//     or above NEXTUID is an error in version 1; in version 3 Dovecot
//     accepts it and raises NEXTUID to the last UID + 1, and so does this.
//   - Record extension fields whose key is not 'A'..'Z' are dropped
//     (Dovecot drops them with a warning); a version 3 record must have
//     " :" and a non-empty file name; file names may not contain "/" or NUL
//     nor start with ":". A CR anywhere but before the "\n" is an error
//     (Dovecot never lists a file whose name has one).
//   - When two records name the same base, the earlier one is dropped and
//     the later UID wins, as in Dovecot.
//
// Errors are *ParseError with the line number.
func ParseUidlist(data []byte) (*Uidlist, error) {
	lines := splitLines(data, false)
	if len(lines) == 0 {
		return nil, uidlistErr(1, "missing header line")
	}
	for i, line := range lines {
		if strings.IndexByte(line, '\r') >= 0 {
			return nil, uidlistErr(i+1, "stray CR")
		}
	}
	u := &Uidlist{}
	hdr := lines[0]
	if len(hdr) < 2 || hdr[0] < '0' || hdr[0] > '9' || hdr[1] != ' ' {
		return nil, uidlistErr(1, "invalid version number")
	}
	u.Version = int(hdr[0] - '0')
	switch u.Version {
	case 1:
		f := strings.Fields(hdr[2:])
		if len(f) < 2 {
			return nil, uidlistErr(1, "version 1 header needs UIDVALIDITY and NEXTUID")
		}
		var err error
		if u.UIDValidity, err = parseUint32(f[0]); err != nil {
			return nil, uidlistErr(1, "invalid UIDVALIDITY %q", f[0])
		}
		if u.NextUID, err = parseUint32(f[1]); err != nil {
			return nil, uidlistErr(1, "invalid NEXTUID %q", f[1])
		}
	case 3:
		for _, tok := range strings.Split(hdr[2:], " ") {
			if tok == "" {
				continue
			}
			key, val := tok[0], tok[1:]
			var err error
			switch key {
			case 'V':
				if u.UIDValidity, err = parseUint32(val); err != nil {
					return nil, uidlistErr(1, "invalid UIDVALIDITY %q", val)
				}
			case 'N':
				if u.NextUID, err = parseUint32(val); err != nil {
					return nil, uidlistErr(1, "invalid NEXTUID %q", val)
				}
			case 'G':
				if u.GUID, err = parseGUID(val); err != nil {
					return nil, uidlistErr(1, "invalid mailbox GUID %q", val)
				}
			default:
				u.Header = append(u.Header, Ext{Key: key, Value: val})
			}
		}
	default:
		return nil, uidlistErr(1, "unsupported version %d", u.Version)
	}
	if u.UIDValidity == 0 || u.NextUID == 0 {
		return nil, uidlistErr(1, "broken header (UIDVALIDITY %d, NEXTUID %d)", u.UIDValidity, u.NextUID)
	}

	var prev uint32
	byBase := make(map[string]int, len(lines)-1)
	if len(lines) > 1 {
		u.Records = make([]UidRecord, 0, len(lines)-1)
	}
	dropped := 0
	for n, line := range lines[1:] {
		lineNo := n + 2
		i := 0
		for i < len(line) && line[i] >= '0' && line[i] <= '9' {
			i++
		}
		if i == 0 || i == len(line) || line[i] != ' ' {
			return nil, uidlistErr(lineNo, "invalid record %q", line)
		}
		uid64, err := strconv.ParseUint(line[:i], 10, 32)
		switch {
		case err != nil || uid64 == math.MaxUint32:
			return nil, uidlistErr(lineNo, "UID %s too high", line[:i])
		case uid64 == 0:
			return nil, uidlistErr(lineNo, "UID 0")
		case uint32(uid64) <= prev:
			return nil, uidlistErr(lineNo, "UIDs not ordered (%d after %d)", uid64, prev)
		}
		uid := uint32(uid64)
		prev = uid
		if u.Version == 1 && uid >= u.NextUID {
			return nil, uidlistErr(lineNo, "UID %d not below NEXTUID %d", uid, u.NextUID)
		}
		rest := strings.TrimLeft(line[i:], " ")
		rec := UidRecord{UID: uid}
		if u.Version == 3 {
			for rest != "" && rest[0] != ':' {
				tok, _, _ := strings.Cut(rest, " ")
				if tok[0] >= 'A' && tok[0] <= 'Z' {
					rec.Ext = append(rec.Ext, Ext{Key: tok[0], Value: tok[1:]})
				}
				rest = strings.TrimLeft(rest[len(tok):], " ")
			}
			if rest == "" {
				return nil, uidlistErr(lineNo, "UID %d: missing \":<filename>\"", uid)
			}
			rest = rest[1:]
		}
		if rest == "" {
			return nil, uidlistErr(lineNo, "UID %d: empty file name", uid)
		}
		if strings.IndexByte(rest, '/') >= 0 || strings.IndexByte(rest, 0) >= 0 {
			return nil, uidlistErr(lineNo, "UID %d: file name %q contains \"/\" or NUL", uid, rest)
		}
		if rest[0] == ':' {
			return nil, uidlistErr(lineNo, "UID %d: file name %q has an empty base", uid, rest)
		}
		rec.FileName = rest
		base := rec.Base()
		if old, ok := byBase[base]; ok {
			u.Records[old].UID = 0 // duplicate: the later UID wins
			dropped++
		}
		byBase[base] = len(u.Records)
		u.Records = append(u.Records, rec)
	}
	if dropped > 0 {
		kept := u.Records[:0]
		for _, r := range u.Records {
			if r.UID != 0 {
				kept = append(kept, r)
			}
		}
		u.Records = kept
	}
	if u.NextUID <= prev {
		u.NextUID = prev + 1
	}
	return u, nil
}

// parseUint32 parses a plain decimal number (no sign, no spaces).
func parseUint32(s string) (uint32, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, strconv.ErrSyntax
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err
}

func parseGUID(s string) ([16]byte, error) {
	var g [16]byte
	if len(s) != 32 {
		return g, strconv.ErrSyntax
	}
	if _, err := hex.Decode(g[:], []byte(s)); err != nil {
		return g, err
	}
	return g, nil
}

// Marshal returns the list in version 3 format: the header as Dovecot
// writes it ("3 V<uidvalidity> N<nextuid> G<guid>", the G field omitted when
// GUID is zero, then Header), then one line per record with its file name
// cut at the first ":", as Dovecot writes it. Marshal does not check the
// list; Validate does.
func (u *Uidlist) Marshal() []byte {
	n := 64
	for _, e := range u.Header {
		n += 2 + len(e.Value)
	}
	for _, r := range u.Records {
		n += 13 + len(r.FileName)
		for _, e := range r.Ext {
			n += 2 + len(e.Value)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, "3 V"...)
	b = strconv.AppendUint(b, uint64(u.UIDValidity), 10)
	b = append(b, " N"...)
	b = strconv.AppendUint(b, uint64(u.NextUID), 10)
	if u.GUID != ([16]byte{}) {
		b = append(b, " G"...)
		b = hex.AppendEncode(b, u.GUID[:])
	}
	for _, e := range u.Header {
		b = append(b, ' ', e.Key)
		b = append(b, e.Value...)
	}
	b = append(b, '\n')
	for _, r := range u.Records {
		b = strconv.AppendUint(b, uint64(r.UID), 10)
		for _, e := range r.Ext {
			b = append(b, ' ', e.Key)
			b = append(b, e.Value...)
		}
		b = append(b, " :"...)
		b = append(b, r.Base()...)
		b = append(b, '\n')
	}
	return b
}

// Validate reports the first reason why Marshal's output would not read back
// as this list in Dovecot, or would make Dovecot rebuild it: zero
// UIDVALIDITY, NEXTUID or GUID (Dovecot would invent a new GUID), UIDs not
// strictly ascending or out of range, NEXTUID not above the last UID, an
// empty base or one with "/", NUL, CR or LF, two records with one base,
// extension keys outside 'A'..'Z', header keys V, N, G or non-printable,
// and values with spaces or control characters.
func (u *Uidlist) Validate() error {
	switch {
	case u.UIDValidity == 0:
		return fmt.Errorf("uidlist: UIDVALIDITY is 0")
	case u.NextUID == 0:
		return fmt.Errorf("uidlist: NEXTUID is 0")
	case u.GUID == [16]byte{}:
		return fmt.Errorf("uidlist: no mailbox GUID")
	}
	for _, e := range u.Header {
		if e.Key <= ' ' || e.Key >= 0x7f || e.Key == 'V' || e.Key == 'N' || e.Key == 'G' {
			return fmt.Errorf("uidlist: invalid header field key %q", e.Key)
		}
		if !validExtValue(e.Value) {
			return fmt.Errorf("uidlist: header field %c has invalid value %q", e.Key, e.Value)
		}
	}
	var prev uint32
	bases := make(map[string]uint32, len(u.Records))
	for _, r := range u.Records {
		switch {
		case r.UID == 0 || r.UID == math.MaxUint32:
			return fmt.Errorf("uidlist: invalid UID %d", r.UID)
		case r.UID <= prev:
			return fmt.Errorf("uidlist: UIDs not ascending (%d after %d)", r.UID, prev)
		}
		prev = r.UID
		for _, e := range r.Ext {
			if e.Key < 'A' || e.Key > 'Z' {
				return fmt.Errorf("uidlist: UID %d: invalid field key %q", r.UID, e.Key)
			}
			if !validExtValue(e.Value) {
				return fmt.Errorf("uidlist: UID %d: field %c has invalid value %q", r.UID, e.Key, e.Value)
			}
		}
		base := r.Base()
		if base == "" || strings.ContainsAny(base, "/\x00\r\n") {
			return fmt.Errorf("uidlist: UID %d: invalid file name %q", r.UID, r.FileName)
		}
		if other, dup := bases[base]; dup {
			return fmt.Errorf("uidlist: UIDs %d and %d both name %q", other, r.UID, base)
		}
		bases[base] = r.UID
	}
	if u.NextUID <= prev {
		return fmt.Errorf("uidlist: NEXTUID %d not above the last UID %d", u.NextUID, prev)
	}
	return nil
}

func validExtValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// ReadUidlist reads and parses dir/dovecot-uidlist. It also returns the
// FileInfo of the file it read. A missing file is an error that wraps
// fs.ErrNotExist. Readers take no lock (Dovecot's don't either).
func ReadUidlist(dir string) (*Uidlist, os.FileInfo, error) {
	path := filepath.Join(dir, UidlistName)
	data, fi, err := readFileInfo(path)
	if err != nil {
		return nil, nil, err
	}
	u, err := ParseUidlist(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return u, fi, nil
}

// WriteUidlist validates u and replaces dir/dovecot-uidlist with it
// atomically (WriteFileAtomic), keeping the old file's mode and giving the
// new file a later mtime than the old one's, to the nanosecond
// (nextUidlistMtime). The caller must hold the uidlist dotlock
// (LockUidlist).
func WriteUidlist(dir string, u *Uidlist) error {
	path := filepath.Join(dir, UidlistName)
	if err := u.Validate(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return writeIndexFileMtime(path, u.Marshal(), nextUidlistMtime)
}

// NewGUID returns a random 128-bit GUID (crypto/rand), for a new mailbox.
func NewGUID() [16]byte {
	var g [16]byte
	if _, err := rand.Read(g[:]); err != nil {
		panic("maildir: crypto/rand failed: " + err.Error())
	}
	return g
}
