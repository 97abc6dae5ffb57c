package maildir

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Flags are the Maildir system flags, as letters in a file name's ":2," part.
type Flags uint8

const (
	FlagDraft   Flags = 1 << iota // D: \Draft
	FlagFlagged                   // F: \Flagged
	FlagPassed                    // P: forwarded; Dovecot keeps it but shows no IMAP flag
	FlagReplied                   // R: \Answered
	FlagSeen                      // S: \Seen
	FlagTrashed                   // T: \Deleted
)

// AllFlags is every flag FileName knows.
const AllFlags = FlagDraft | FlagFlagged | FlagPassed | FlagReplied | FlagSeen | FlagTrashed

// KeywordMask covers the 26 keyword letters 'a'..'z'.
const KeywordMask uint32 = 1<<26 - 1

// flagLetters is in ASCII order, the order flags take in a file name.
var flagLetters = [...]struct {
	flag Flags
	c    byte
}{
	{FlagDraft, 'D'}, {FlagFlagged, 'F'}, {FlagPassed, 'P'},
	{FlagReplied, 'R'}, {FlagSeen, 'S'}, {FlagTrashed, 'T'},
}

// String returns the flag letters in ASCII order ("FS").
func (f Flags) String() string {
	var b []byte
	for _, fl := range flagLetters {
		if f&fl.flag != 0 {
			b = append(b, fl.c)
		}
	}
	return string(b)
}

func flagForLetter(c byte) Flags {
	for _, fl := range flagLetters {
		if fl.c == c {
			return fl.flag
		}
	}
	return 0
}

// ErrInvalidFileName is wrapped by the errors ParseFileName returns.
var ErrInvalidFileName = errors.New("invalid maildir file name")

// FileName is a parsed Maildir file name:
// base[,S=<size>][,W=<vsize>][:2,<flags>].
type FileName struct {
	Base     string // everything before ":" (the ,S= ,W= fields included): the message identity
	Size     int64  // from ,S= ; -1 when absent
	VSize    int64  // from ,W= ; -1 when absent
	Flags    Flags
	Keywords uint32 // bit i = letter 'a'+i
	HasInfo  bool   // a ":2," part was present
	// Unknown holds what was not understood. With HasInfo, it is the flag
	// characters after ":2," that are neither system flags nor keyword
	// letters, sorted and without repeats; String writes them back merged
	// in ASCII order with the known ones (as Dovecot keeps unknown flags).
	// Without HasInfo, it is the whole info part after a ":" that does not
	// start with "2," (for example Courier's ":1,..."), kept verbatim;
	// String writes it back as is, and WithFlags drops it, as Dovecot does
	// when it sets flags on such a file.
	Unknown string
}

// ParseFileName parses a Maildir file name. It rejects: an empty name, one
// longer than 255 bytes, not valid UTF-8, containing "/", NUL or another
// control character, starting with "." (hidden and temporary files), with an
// empty base (":..."), with more than one ":", and a ":2," flag part holding a
// "," (a second flag set), a space or non-ASCII bytes. Size and VSize come from the
// first ",S=" and ",W=" in the base, each followed by digits and then "," or
// the end of the base, else they are -1 (Dovecot reads them the same way).
func ParseFileName(name string) (FileName, error) {
	bad := func(reason string) (FileName, error) {
		return FileName{}, fmt.Errorf("%w %q: %s", ErrInvalidFileName, name, reason)
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > 255:
		return bad("longer than 255 bytes")
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case name[0] == '.':
		return bad("starts with \".\"")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '/' || c < 0x20 || c == 0x7f {
			return bad(fmt.Sprintf("contains byte 0x%02x", c))
		}
	}
	f := FileName{Base: name, Size: -1, VSize: -1}
	if i := strings.IndexByte(name, ':'); i >= 0 {
		f.Base = name[:i]
		info := name[i+1:]
		if f.Base == "" {
			return bad("empty base name")
		}
		if strings.IndexByte(info, ':') >= 0 {
			return bad("more than one \":\"")
		}
		if flags, ok := strings.CutPrefix(info, "2,"); ok {
			f.HasInfo = true
			var unknown [128]bool
			for j := 0; j < len(flags); j++ {
				c := flags[j]
				switch {
				case c == ',':
					return bad("a second flag set after \",\" is not supported")
				case c <= 0x20 || c >= 0x7f:
					return bad(fmt.Sprintf("flag character 0x%02x", c))
				case flagForLetter(c) != 0:
					f.Flags |= flagForLetter(c)
				case c >= 'a' && c <= 'z':
					f.Keywords |= 1 << (c - 'a')
				default:
					unknown[c] = true
				}
			}
			var u []byte
			for c, ok := range unknown {
				if ok {
					u = append(u, byte(c))
				}
			}
			f.Unknown = string(u)
		} else {
			f.Unknown = info
		}
	}
	f.Size = sizeField(f.Base, 'S')
	f.VSize = sizeField(f.Base, 'W')
	return f, nil
}

// sizeField reads ",<key>=<digits>" from a base name, as Dovecot's
// maildir_filename_get_size does: only the first occurrence counts, and the
// digits must end the base or be followed by ",".
func sizeField(base string, key byte) int64 {
	i := strings.Index(base, ","+string(key)+"=")
	if i < 0 {
		return -1
	}
	rest := base[i+3:]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || (n < len(rest) && rest[n] != ',') {
		return -1
	}
	v, err := strconv.ParseInt(rest[:n], 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// String returns the file name: Base, then ":2," and the flag letters in
// ASCII order (system flags, keyword letters and unknown flags merged) when
// HasInfo is set or any flag or keyword is; otherwise Base and, if Unknown
// holds a foreign info part, ":" and that part. For names Dovecot writes,
// String(ParseFileName(n)) == n. Keep the name you read from disk to open or
// rename an existing file; use String for the name it should have.
func (f FileName) String() string {
	if !f.HasInfo && f.Flags&AllFlags == 0 && f.Keywords&KeywordMask == 0 {
		if f.Unknown == "" {
			return f.Base
		}
		return f.Base + ":" + f.Unknown
	}
	var set [128]bool
	for _, fl := range flagLetters {
		if f.Flags&fl.flag != 0 {
			set[fl.c] = true
		}
	}
	for i := range 26 {
		if f.Keywords&(1<<i) != 0 {
			set['a'+i] = true
		}
	}
	if f.HasInfo {
		for i := 0; i < len(f.Unknown); i++ {
			if c := f.Unknown[i]; c > 0x20 && c < 0x7f && c != ',' && c != ':' && c != '/' {
				set[c] = true
			}
		}
	}
	b := make([]byte, 0, len(f.Base)+3+16)
	b = append(b, f.Base...)
	b = append(b, ":2,"...)
	for c, ok := range set {
		if ok {
			b = append(b, byte(c))
		}
	}
	return string(b)
}

// WithFlags returns f with its system flags and keywords replaced (bits
// outside AllFlags and KeywordMask are dropped). Unknown flag characters of a
// ":2," name are kept; a foreign info part is dropped.
func (f FileName) WithFlags(fl Flags, kw uint32) FileName {
	g := f
	g.Flags = fl & AllFlags
	g.Keywords = kw & KeywordMask
	if !g.HasInfo {
		g.HasInfo = true
		g.Unknown = ""
	}
	return g
}

// NewBase returns a unique base name in Dovecot's style,
// "<secs>.M<usecs>P<pid>Q<seq>.<host>", followed by ",S=<size>" when size >= 0
// and ",W=<vsize>" when vsize >= 0. The caller makes seq unique within the
// process (a counter). In host, "/" becomes "\057" and ":" "\072" (the
// Maildir convention; Dovecot itself refuses such host names), and so do ","
// ("\054") and control characters, which would confuse the size fields; an
// empty host is "localhost".
func NewBase(t time.Time, seq uint64, host string, size, vsize int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d.M%dP%dQ%d.%s", t.Unix(), t.Nanosecond()/1000, os.Getpid(), seq, sanitizeHost(host))
	if size >= 0 {
		fmt.Fprintf(&b, ",S=%d", size)
	}
	if vsize >= 0 {
		fmt.Fprintf(&b, ",W=%d", vsize)
	}
	return b.String()
}

func sanitizeHost(host string) string {
	if host == "" {
		return "localhost"
	}
	var b strings.Builder
	for i := 0; i < len(host); i++ {
		c := host[i]
		if c == '/' || c == ':' || c == ',' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "\\%03o", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
