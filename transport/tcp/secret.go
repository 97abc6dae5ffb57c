package tcp

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/twinbox-mail/twinbox/config"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// MinKeyLen is the shortest secret key accepted, in bytes.
const MinKeyLen = 32

// maxNameLen bounds a secret's name; maxUserLen a mail user's name.
const (
	maxNameLen = 64
	maxUserLen = 255
)

// Secret is one shared secret a listener accepts.
type Secret struct {
	// Name identifies the secret; it travels in the clear (it is not
	// itself secret). 1-64 bytes of printable ASCII without spaces.
	Name string
	// Key is the secret itself, at least MinKeyLen bytes.
	Key []byte
	// Users are the mail users this secret may replicate: patterns where
	// '*' matches any run of characters and '?' any one character
	// ("*" is every user, "*@example.org" a domain).
	Users []string
}

// Allows reports whether the secret grants replication of user.
func (s *Secret) Allows(user string) bool {
	for _, p := range s.Users {
		if MatchUser(p, user) {
			return true
		}
	}
	return false
}

// CheckName validates a secret's name.
func CheckName(name string) error {
	if name == "" {
		return errors.New("empty secret name")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("secret name longer than %d bytes", maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("secret name %q: only printable ASCII without spaces", name)
		}
	}
	return nil
}

// Check validates the secret: its name, the key length and the patterns.
func (s *Secret) Check() error {
	if err := CheckName(s.Name); err != nil {
		return err
	}
	if len(s.Key) < MinKeyLen {
		return fmt.Errorf("secret %q: key of %d bytes, need at least %d", s.Name, len(s.Key), MinKeyLen)
	}
	if len(s.Users) == 0 {
		return fmt.Errorf("secret %q: no user patterns (it would grant nothing)", s.Name)
	}
	for _, p := range s.Users {
		if p == "" || len(p) > maxUserLen || !utf8.ValidString(p) || strings.ContainsFunc(p, isBadUserRune) {
			return fmt.Errorf("secret %q: bad user pattern %q", s.Name, p)
		}
	}
	return nil
}

// ValidUser checks a mail user's name as it arrives from a peer: non-empty,
// at most 255 bytes of UTF-8, no '/', no "..", no control characters or
// spaces, not starting with '-'.
func ValidUser(user string) error { return config.ValidUserName(user) }

func isBadUserRune(r rune) bool {
	return r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError ||
		r == '\u2028' || r == '\u2029' || r == '\u00a0'
}

// MatchUser reports whether user matches pattern, where '*' matches any
// run of characters (none included) and '?' exactly one character. Every
// other character matches itself; there are no classes and no escapes.
func MatchUser(pattern, user string) bool {
	p, u := []rune(pattern), []rune(user)
	// Iterative glob with one backtrack point: linear in practice, never
	// exponential.
	pi, ui := 0, 0
	star, mark := -1, 0
	for ui < len(u) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == u[ui]):
			pi++
			ui++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ui
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ui = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// ParseKey decodes the contents of a secret file: standard base64 (padding
// optional), surrounding white space ignored, at least MinKeyLen bytes
// after decoding.
func ParseKey(data []byte) ([]byte, error) {
	text := string(bytes.TrimSpace(data))
	if text == "" {
		return nil, errors.New("empty secret")
	}
	if strings.ContainsAny(text, " \t\r\n") {
		return nil, errors.New("secret is not one line of base64")
	}
	enc := base64.StdEncoding
	if !strings.HasSuffix(text, "=") && len(text)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	key, err := enc.Strict().DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("secret is not base64: %v", err)
	}
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("secret decodes to %d bytes, need at least %d (make one with: head -c 32 /dev/urandom | base64)", len(key), MinKeyLen)
	}
	return key, nil
}

// ReadKeyFile reads a secret file (see ParseKey). It refuses a file that
// others than its owner and group may read or write (mode & 0o007, or
// group write), and one larger than 4 KiB.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("secret file %s: not a regular file", path)
	}
	if m := fi.Mode().Perm(); m&0o027 != 0 {
		return nil, fmt.Errorf("secret file %s: mode %04o lets others read or write it (chmod 600 or 640)", path, m)
	}
	if fi.Size() > 4096 {
		return nil, fmt.Errorf("secret file %s: larger than 4 KiB", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	if len(data) > 4096 {
		return nil, fmt.Errorf("secret file %s: larger than 4 KiB", path)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	return key, nil
}
