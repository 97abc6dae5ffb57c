package config

import (
	"errors"
	"fmt"
	"strings"
)

// SplitCommand splits a command template into words the way a shell would
// for plain words and quotes ('...', "...", backslash), with no expansion of
// any kind: the words are run directly, never through a shell.
func SplitCommand(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unclosed single quote")
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			in = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unclosed double quote")
			}
			in = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("ends in a backslash")
			}
			i++
			cur.WriteByte(s[i])
			in = true
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, errors.New("empty command")
	}
	return words, nil
}

// ExpandCommand fills the placeholders of a command template: %{login},
// %{host}, %{port}, %u or %{user}, %%. A word with a placeholder that is
// empty is left out (so "-l%{login}" disappears when no login is given).
func ExpandCommand(template string, vars map[string]string) ([]string, error) {
	words, err := SplitCommand(template)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, w := range words {
		var b strings.Builder
		empty := false
		for i := 0; i < len(w); i++ {
			if w[i] != '%' {
				b.WriteByte(w[i])
				continue
			}
			i++
			if i >= len(w) {
				return nil, fmt.Errorf("%q ends in '%%'", w)
			}
			key := string(w[i])
			if w[i] == '{' {
				end := strings.IndexByte(w[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("%q: unclosed %%{", w)
				}
				key = w[i+1 : i+end]
				i += end
			}
			switch key {
			case "%":
				b.WriteByte('%')
				continue
			case "u":
				key = "user"
			}
			v, ok := vars[key]
			if !ok {
				return nil, fmt.Errorf("%q: unknown placeholder %%%s", w, key)
			}
			if v == "" {
				empty = true
			}
			b.WriteString(v)
		}
		if !empty {
			out = append(out, b.String())
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the command is empty once expanded")
	}
	return out, nil
}
