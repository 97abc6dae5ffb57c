package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// KeywordsName is the file name of the keyword map in a mailbox directory.
const KeywordsName = "dovecot-keywords"

// MaxKeywords is how many keywords a Maildir file name can carry: the
// letters 'a'..'z'. Dovecot ignores dovecot-keywords lines with a higher
// index.
const MaxKeywords = 26

// ParseKeywords parses dovecot-keywords: lines "<index> <name>", where index
// 0 is the letter 'a'. The result is indexed by letter; a letter with no
// line is "" (gaps are allowed). Like Dovecot, it skips lines without a
// space, with an index that is not a plain decimal number below 26, or with
// an empty name; a later line for the same index wins; a last line without
// "\n" is ignored and a "\r" before "\n" dropped. The name is the rest of the
// line after the first space. Dovecot matches names case-insensitively (see
// LookupKeyword). The only error is a NUL byte: the data is not a keywords
// file at all.
func ParseKeywords(data []byte) ([]string, error) {
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, &ParseError{File: KeywordsName, Reason: "contains a NUL byte"}
	}
	var kw []string
	for _, line := range splitLines(data, false) {
		idxStr, name, ok := strings.Cut(line, " ")
		if !ok || name == "" || idxStr == "" || idxStr[0] < '0' || idxStr[0] > '9' {
			continue
		}
		idx, err := strconv.ParseUint(idxStr, 10, 32)
		if err != nil || idx >= MaxKeywords {
			continue
		}
		for len(kw) <= int(idx) {
			kw = append(kw, "")
		}
		kw[idx] = name
	}
	return kw, nil
}

// validKeyword reports whether a keyword name can be written to
// dovecot-keywords and read back: non-empty, valid UTF-8, no control
// characters.
func validKeyword(name string) bool {
	if name == "" || !utf8.ValidString(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// MarshalKeywords writes "<index> <name>" lines for the non-empty entries
// among the first 26, as Dovecot does. Entries that could not be read back
// (see ValidateKeywords) are left out; WriteKeywords refuses them instead.
func MarshalKeywords(kw []string) []byte {
	var b bytes.Buffer
	for i, name := range kw {
		if i >= MaxKeywords {
			break
		}
		if name == "" || !validKeyword(name) {
			continue
		}
		b.WriteString(strconv.Itoa(i))
		b.WriteByte(' ')
		b.WriteString(name)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ValidateKeywords checks a keyword map before it is written: at most 26
// letters (trailing "" entries beyond are fine), each non-empty name valid
// (no control characters, valid UTF-8), and no name twice, compared
// case-insensitively as Dovecot does.
func ValidateKeywords(kw []string) error {
	seen := make(map[string]int)
	for i, name := range kw {
		if name == "" {
			continue
		}
		if i >= MaxKeywords {
			return fmt.Errorf("keywords: %q at index %d; only %d keywords fit in file names", name, i, MaxKeywords)
		}
		if !validKeyword(name) {
			return fmt.Errorf("keywords: invalid keyword %q", name)
		}
		key := strings.ToLower(name)
		if j, dup := seen[key]; dup {
			return fmt.Errorf("keywords: %q at both index %d and %d", name, j, i)
		}
		seen[key] = i
	}
	return nil
}

// LookupKeyword returns the index (letter 'a'+index) of name in kw,
// compared case-insensitively as Dovecot does.
func LookupKeyword(kw []string, name string) (int, bool) {
	for i, k := range kw {
		if k != "" && strings.EqualFold(k, name) {
			return i, true
		}
	}
	return 0, false
}

// ReadKeywords reads dir/dovecot-keywords. A missing file is no error: it
// returns nil, nil, nil.
func ReadKeywords(dir string) ([]string, os.FileInfo, error) {
	path := filepath.Join(dir, KeywordsName)
	data, fi, err := readFileInfo(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	kw, err := ParseKeywords(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return kw, fi, nil
}

// WriteKeywords validates kw and replaces dir/dovecot-keywords atomically,
// with an mtime in a later second than the old file's: Dovecot rereads the
// file only when its mtime (in whole seconds) changes. The caller must hold
// the uidlist dotlock, as Dovecot relies on it for this file too.
func WriteKeywords(dir string, kw []string) error {
	path := filepath.Join(dir, KeywordsName)
	if err := ValidateKeywords(kw); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return writeIndexFile(path, MarshalKeywords(kw))
}
