package maildir

import (
	"errors"
	"fmt"
	"strings"
)

// ErrCorrupt is wrapped by every *ParseError: the file's bytes are not in
// the format (as opposed to an I/O error).
var ErrCorrupt = errors.New("corrupt file")

// ParseError reports where a file does not follow its format.
type ParseError struct {
	File   string // "dovecot-uidlist", "dovecot-keywords", ...
	Line   int    // 1-based; 0 when not about one line
	Reason string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s line %d: %s", e.File, e.Line, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Reason)
}

func (e *ParseError) Unwrap() error { return ErrCorrupt }

// splitLines splits data into lines the way Dovecot's istream does: lines
// end at "\n", one "\r" before it is dropped, and a last line without "\n" is
// returned only when partial is set (Dovecot reads dovecot-uidlist and
// dovecot-keywords without it: a line still being appended is not yet there).
func splitLines(data []byte, partial bool) []string {
	s := string(data)
	lines := make([]string, 0, strings.Count(s, "\n")+1)
	for s != "" {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			if partial {
				lines = append(lines, strings.TrimSuffix(s, "\r"))
			}
			break
		}
		lines = append(lines, strings.TrimSuffix(s[:i], "\r"))
		s = s[i+1:]
	}
	return lines
}
