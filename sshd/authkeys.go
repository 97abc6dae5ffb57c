package sshd

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	gossh "golang.org/x/crypto/ssh"
)

// maxAuthFile bounds the authorized keys file (a file this large is a
// mistake, not a key list).
const maxAuthFile = 16 << 20

// authEntry is one accepted line of the authorized keys file.
type authEntry struct {
	line  int
	fp    string
	from  *patternList // nil: any source address
	users *patternList // nil: no user (the line authorises nothing)
}

// authKeys is the parsed content of an authorized keys file: the lines of
// each key (by its wire encoding), in file order.
type authKeys struct {
	byKey map[string][]*authEntry
	lines int // accepted lines
	bad   int // refused lines
}

// parseAuthorizedKeys parses an authorized keys file. A line that cannot be
// parsed or carries an option twinbox does not know is refused: reported
// through bad and left out, never half-read.
func parseAuthorizedKeys(data []byte, bad func(line int, err error)) *authKeys {
	ak := &authKeys{byKey: map[string][]*authEntry{}}
	for n, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(bytes.TrimSuffix(line, []byte("\r")))
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		key, e, err := parseAuthLine(line)
		if err != nil {
			ak.bad++
			bad(n+1, err)
			continue
		}
		e.line = n + 1
		k := string(key.Marshal())
		ak.byKey[k] = append(ak.byKey[k], e)
		ak.lines++
	}
	return ak
}

// parseAuthLine parses one non-empty, non-comment line.
func parseAuthLine(line []byte) (gossh.PublicKey, *authEntry, error) {
	if !utf8.Valid(line) {
		return nil, nil, errors.New("not valid UTF-8")
	}
	// ParseAuthorizedKey skips lines it cannot parse and goes on with the
	// next one; a single line with no newline makes it parse just that.
	if bytes.ContainsAny(line, "\n\r") {
		return nil, nil, errors.New("line break inside the line")
	}
	key, _, opts, rest, err := gossh.ParseAuthorizedKey(line)
	if err != nil {
		return nil, nil, fmt.Errorf("no valid key: %v", err)
	}
	if len(rest) != 0 {
		return nil, nil, errors.New("more than one key on the line")
	}
	if _, ok := key.(*gossh.Certificate); ok {
		return nil, nil, errors.New("certificates are not supported")
	}
	e := &authEntry{fp: gossh.FingerprintSHA256(key)}
	if err := e.parseOptions(opts); err != nil {
		return nil, nil, err
	}
	return key, e, nil
}

// narrowing are OpenSSH options that only take rights away; the embedded
// server grants none of those rights anyway, so they are accepted (a line
// may be shared with OpenSSH's authorized_keys).
var narrowing = map[string]bool{
	"restrict":            true,
	"no-pty":              true,
	"no-port-forwarding":  true,
	"no-agent-forwarding": true,
	"no-x11-forwarding":   true,
	"no-user-rc":          true,
}

// parseOptions reads the options of a line: from= and users=, and the
// OpenSSH options that only narrow access. Anything else refuses the line.
func (e *authEntry) parseOptions(opts []string) error {
	seen := map[string]bool{}
	for _, o := range opts {
		name, value, hasValue := strings.Cut(o, "=")
		lname := strings.ToLower(name)
		if seen[lname] {
			return fmt.Errorf("option %s given twice", name)
		}
		seen[lname] = true
		switch {
		case narrowing[lname]:
			if hasValue {
				return fmt.Errorf("option %s takes no value", name)
			}
		case lname == "from" || lname == "users":
			if !hasValue {
				return fmt.Errorf("option %s needs a value: %s=\"...\"", name, lname)
			}
			v, err := unquote(value)
			if err != nil {
				return fmt.Errorf("option %s: %v", name, err)
			}
			if lname == "from" {
				e.from, err = parseFromList(v)
			} else {
				e.users, err = parseUserList(v)
			}
			if err != nil {
				return fmt.Errorf("option %s: %v", name, err)
			}
		case lname == "command":
			return errors.New("option command= is not supported: the embedded server only ever runs the sync server")
		default:
			return fmt.Errorf("unknown or unsupported option %q (the line is refused rather than read without it)", name)
		}
	}
	return nil
}

// unquote removes the double quotes around an option value; inside, \" is
// a quote, as in OpenSSH.
func unquote(v string) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errors.New("value must be in double quotes")
	}
	v = v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) && v[i+1] == '"' {
			i++
		} else if v[i] == '"' {
			return "", errors.New("unescaped quote inside the value")
		}
		b.WriteByte(v[i])
	}
	return b.String(), nil
}

// pattern is one element of a pattern list: a wildcard pattern (* and ?)
// or, for addresses, a CIDR prefix or an exact address; neg for a leading !.
type pattern struct {
	neg    bool
	glob   string
	prefix netip.Prefix // valid for a CIDR or an exact address
}

// patternList is a comma-separated OpenSSH pattern list: it matches when
// some positive pattern matches and no negated one does.
type patternList struct {
	src  string
	pats []pattern
}

func (l *patternList) String() string { return l.src }

// splitPatterns splits a list and checks each element's syntax.
func splitPatterns(v string) ([]pattern, error) {
	if v == "" {
		return nil, errors.New("empty pattern list")
	}
	var out []pattern
	for _, p := range strings.Split(v, ",") {
		var pt pattern
		if strings.HasPrefix(p, "!") {
			pt.neg = true
			p = p[1:]
		}
		if p == "" {
			return nil, errors.New("empty pattern in the list")
		}
		for _, r := range p {
			if r < 0x20 || r == 0x7f || r == ' ' || r == '\t' || r == '!' || r == '"' || r == '\\' {
				return nil, fmt.Errorf("pattern %q: character %q not allowed", p, r)
			}
		}
		pt.glob = p
		out = append(out, pt)
	}
	return out, nil
}

// parseUserList parses users="...": mail user name patterns.
func parseUserList(v string) (*patternList, error) {
	pats, err := splitPatterns(v)
	if err != nil {
		return nil, err
	}
	return &patternList{src: v, pats: pats}, nil
}

// parseFromList parses from="...": source address patterns. Host names
// are refused: the server matches addresses only (no DNS).
func parseFromList(v string) (*patternList, error) {
	pats, err := splitPatterns(v)
	if err != nil {
		return nil, err
	}
	for i := range pats {
		p := &pats[i]
		if strings.Contains(p.glob, "/") {
			pf, err := netip.ParsePrefix(p.glob)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR prefix", p.glob)
			}
			if pf.Addr().Zone() != "" {
				return nil, fmt.Errorf("%q: zones are not supported", p.glob)
			}
			if pf.Masked() != pf {
				return nil, fmt.Errorf("%q has bits set beyond its prefix length (did you mean %s?)", p.glob, pf.Masked())
			}
			p.prefix = pf
			p.glob = ""
			continue
		}
		if a, err := netip.ParseAddr(p.glob); err == nil {
			if a.Zone() != "" {
				return nil, fmt.Errorf("%q: zones are not supported", p.glob)
			}
			a = a.Unmap()
			p.prefix = netip.PrefixFrom(a, a.BitLen())
			p.glob = ""
			continue
		}
		if !addrGlob(p.glob) {
			return nil, fmt.Errorf("%q is not an address, CIDR prefix or address pattern (host names are not matched: twinbox does no DNS lookups)", p.glob)
		}
		p.glob = strings.ToLower(p.glob)
	}
	return &patternList{src: v, pats: pats}, nil
}

// addrGlob reports whether p looks like a wildcard pattern over addresses
// (192.168.1.*, fe80::*, *), not a host name.
func addrGlob(p string) bool {
	wild, sep := false, false
	for _, r := range p {
		switch {
		case r == '*' || r == '?':
			wild = true
		case r == '.' || r == ':':
			sep = true
		case r >= '0' && r <= '9', r >= 'a' && r <= 'f', r >= 'A' && r <= 'F':
		default:
			return false
		}
	}
	if !wild {
		return false // an exact address parses as one; anything else is a name
	}
	if sep {
		return true
	}
	return strings.Trim(p, "*?0123456789") == ""
}

// matchUser reports whether the list allows user.
func (l *patternList) matchUser(user string) bool {
	return l.match(func(p pattern) bool { return wildcardMatch(p.glob, user) })
}

// matchAddr reports whether the list allows the source address a.
func (l *patternList) matchAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	s := a.String()
	return l.match(func(p pattern) bool {
		if p.glob == "" {
			return p.prefix.Contains(a)
		}
		return wildcardMatch(p.glob, s)
	})
}

func (l *patternList) match(f func(pattern) bool) bool {
	pos := false
	for _, p := range l.pats {
		if f(p) {
			if p.neg {
				return false
			}
			pos = true
		}
	}
	return pos
}

// wildcardMatch matches s against a pattern where * is any run of bytes
// and ? any one byte (linear backtracking: no blow-up on hostile input).
func wildcardMatch(pat, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pat) && (pat[p] == '?' || pat[p] == s[i]):
			p++
			i++
		case p < len(pat) && pat[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}

// fileStamp identifies a version of a file: re-read when it changes.
type fileStamp struct {
	mtime time.Time
	ctime syscall.Timespec
	size  int64
	ino   uint64
	mode  os.FileMode
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{mtime: fi.ModTime(), size: fi.Size(), mode: fi.Mode()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = s.Ino
		st.ctime = s.Ctim
	}
	return st
}

// authFile is the authorized keys file, re-read whenever it changes.
type authFile struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	stamp fileStamp
	keys  *authKeys
	err   error // why the file is unusable (then every key is refused)
}

// load reads the file again if it changed since the last read.
func (f *authFile) load() (*authKeys, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err != nil {
		return f.fail(fileStamp{}, fmt.Errorf("authorized keys file: %w", err))
	}
	st := stampOf(fi)
	if (f.keys != nil || f.err != nil) && st == f.stamp {
		return f.keys, f.err
	}
	if !fi.Mode().IsRegular() {
		return f.fail(st, fmt.Errorf("authorized keys file %s is not a regular file", f.path))
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return f.fail(st, fmt.Errorf("authorized keys file %s is writable by group or others (mode %04o): refusing every key; chmod go-w it", f.path, fi.Mode().Perm()))
	}
	if fi.Size() > maxAuthFile {
		return f.fail(st, fmt.Errorf("authorized keys file %s is larger than %d bytes", f.path, maxAuthFile))
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return f.fail(st, fmt.Errorf("authorized keys file: %w", err))
	}
	keys := parseAuthorizedKeys(data, func(line int, err error) {
		f.log.Warn("sshd: authorized keys line refused", "file", f.path, "line", line, "reason", err.Error())
	})
	for _, es := range keys.byKey {
		for _, e := range es {
			if e.users == nil {
				f.log.Warn("sshd: authorized key has no users= option: it may sync no user", "file", f.path, "line", e.line, "fingerprint", e.fp)
			}
		}
	}
	f.log.Info("sshd: authorized keys loaded", "file", f.path, "keys", keys.lines, "refused_lines", keys.bad)
	f.stamp, f.keys, f.err = st, keys, nil
	return keys, nil
}

func (f *authFile) fail(st fileStamp, err error) (*authKeys, error) {
	if f.err == nil || f.err.Error() != err.Error() || f.stamp != st {
		f.log.Error("sshd: authorized keys file unusable", "file", f.path, "err", err)
	}
	f.stamp, f.keys, f.err = st, nil, err
	return nil, err
}

// authorize decides whether key, connecting from addr, may log in (user
// "") or sync user. It returns "" when allowed, else the reason.
func (f *authFile) authorize(key gossh.PublicKey, addr netip.Addr, user string) string {
	keys, err := f.load()
	if err != nil {
		return err.Error()
	}
	return keys.authorize(key, addr, user, f.path)
}

// authorize: some line of the key must allow the source address and,
// given a user, that user; the lines of a key are a union.
func (ak *authKeys) authorize(key gossh.PublicKey, addr netip.Addr, user, file string) string {
	es := ak.byKey[string(key.Marshal())]
	if len(es) == 0 {
		return "key not in the authorized keys file"
	}
	var why []string
	for _, e := range es {
		switch {
		case e.from != nil && !e.from.matchAddr(addr):
			why = append(why, fmt.Sprintf("%s:%d: source address %s not allowed by from=%q", file, e.line, addr.Unmap(), e.from))
		case e.users == nil:
			why = append(why, fmt.Sprintf("%s:%d: the key has no users= option", file, e.line))
		case user != "" && !e.users.matchUser(user):
			why = append(why, fmt.Sprintf("%s:%d: user %q not allowed by users=%q", file, e.line, user, e.users))
		default:
			return ""
		}
	}
	return strings.Join(why, "; ")
}
