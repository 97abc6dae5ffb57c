package maildir

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
)

// Modified UTF-7 (RFC 3501 section 5.1.3), as Dovecot's imap-utf7.c writes
// and reads it: printable ASCII (0x20..0x7e) stands for itself except "&",
// which is written "&-"; every run of other characters is written as "&",
// the modified base64 (alphabet A-Z a-z 0-9 + ",", no padding) of its UTF-16BE
// form, and "-".

const mutf7Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"

var mutf7Encoding = base64.NewEncoding(mutf7Alphabet).WithPadding(base64.NoPadding).Strict()

// EncodeMUTF7 encodes a UTF-8 string as modified UTF-7, exactly as Dovecot
// does (so the result is canonical: DecodeMUTF7 accepts it and returns s).
// Invalid UTF-8 bytes are encoded as U+FFFD; callers that care validate
// first (MailboxDir does).
func EncodeMUTF7(s string) string {
	if !needsMUTF7(s) {
		return s
	}
	var b strings.Builder
	var run []uint16
	flush := func() {
		if len(run) == 0 {
			return
		}
		raw := make([]byte, 0, 2*len(run))
		for _, u := range run {
			raw = append(raw, byte(u>>8), byte(u))
		}
		b.WriteByte('&')
		b.WriteString(mutf7Encoding.EncodeToString(raw))
		b.WriteByte('-')
		run = run[:0]
	}
	for _, r := range s {
		if r >= 0x20 && r < 0x7f {
			flush()
			if r == '&' {
				b.WriteString("&-")
			} else {
				b.WriteRune(r)
			}
			continue
		}
		run = utf16.AppendRune(run, r)
	}
	flush()
	return b.String()
}

func needsMUTF7(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '&' || c < 0x20 || c >= 0x7f {
			return true
		}
	}
	return false
}

// ErrMUTF7 is wrapped by every error DecodeMUTF7 returns.
var ErrMUTF7 = errors.New("invalid modified UTF-7")

// DecodeMUTF7 decodes modified UTF-7 to UTF-8. It is strict: it accepts
// only the canonical form EncodeMUTF7 produces, so that one name has exactly
// one encoding on disk. Rejected: bytes outside 0x20..0x7e, an unterminated
// "&", characters outside the base64 alphabet, base64 with non-zero
// trailing bits or an odd number of bytes, unpaired surrogates, an encoded
// NUL, encoded printable ASCII, and two encoded runs back to back
// ("&...-&...-"), all of which Dovecot's encoder never writes (Dovecot's own
// decoder rejects all but the trailing-bits case).
func DecodeMUTF7(s string) (string, error) {
	if !needsMUTF7(s) {
		return s, nil
	}
	var b strings.Builder
	prevEncoded := false
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x20 || c >= 0x7f {
			return "", fmt.Errorf("%w: byte 0x%02x at offset %d in %q", ErrMUTF7, c, i, s)
		}
		if c != '&' {
			b.WriteByte(c)
			prevEncoded = false
			i++
			continue
		}
		end := strings.IndexByte(s[i+1:], '-')
		if end < 0 {
			return "", fmt.Errorf("%w: unterminated \"&\" at offset %d in %q", ErrMUTF7, i, s)
		}
		section := s[i+1 : i+1+end]
		next := i + 1 + end + 1
		if section == "" {
			b.WriteByte('&')
			prevEncoded = false
			i = next
			continue
		}
		if prevEncoded {
			return "", fmt.Errorf("%w: two encoded runs back to back at offset %d in %q", ErrMUTF7, i, s)
		}
		if err := decodeMUTF7Section(&b, section); err != nil {
			return "", fmt.Errorf("%w: %s at offset %d in %q", ErrMUTF7, err.Error(), i, s)
		}
		prevEncoded = true
		i = next
	}
	return b.String(), nil
}

func decodeMUTF7Section(b *strings.Builder, section string) error {
	// The standard decoder skips '\r' and '\n'; make sure only alphabet
	// characters get that far.
	for i := 0; i < len(section); i++ {
		if strings.IndexByte(mutf7Alphabet, section[i]) < 0 {
			return fmt.Errorf("character %q not in the base64 alphabet", section[i])
		}
	}
	raw, err := mutf7Encoding.DecodeString(section)
	if err != nil {
		return errors.New("malformed base64")
	}
	if len(raw)%2 != 0 {
		return errors.New("odd number of UTF-16 bytes")
	}
	units := make([]uint16, len(raw)/2)
	for i := range units {
		units[i] = uint16(raw[2*i])<<8 | uint16(raw[2*i+1])
	}
	for i := 0; i < len(units); i++ {
		u := units[i]
		var r rune
		switch {
		case utf16.IsSurrogate(rune(u)) && u < 0xdc00:
			if i+1 >= len(units) {
				return errors.New("unpaired high surrogate")
			}
			r = utf16.DecodeRune(rune(u), rune(units[i+1]))
			if r == 0xfffd {
				return errors.New("invalid surrogate pair")
			}
			i++
		case utf16.IsSurrogate(rune(u)):
			return errors.New("unpaired low surrogate")
		default:
			r = rune(u)
		}
		if r == 0 {
			return errors.New("encoded NUL")
		}
		if r >= 0x20 && r < 0x7f {
			return fmt.Errorf("encoded printable ASCII %q", r)
		}
		b.WriteRune(r)
	}
	return nil
}
