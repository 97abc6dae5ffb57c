package config

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxUserName bounds a user name, as Dovecot's userdb does in practice.
const MaxUserName = 255

// ValidUserName checks a user name from a peer, a command line or a
// forced command: non-empty, at most 255 bytes of UTF-8, no slash, no "..",
// no space or control character, not starting with '-'. It keeps a name from
// ever reaching outside the mail root through a path template.
func ValidUserName(u string) error {
	switch {
	case u == "":
		return errors.New("empty user name")
	case len(u) > MaxUserName:
		return fmt.Errorf("user name longer than %d bytes", MaxUserName)
	case !utf8.ValidString(u):
		return fmt.Errorf("user name %q is not UTF-8", u)
	case strings.HasPrefix(u, "-"):
		return fmt.Errorf("user name %q starts with '-'", u)
	case strings.ContainsAny(u, "/\\%"):
		return fmt.Errorf("user name %q contains '/', '\\' or '%%'", u)
	case strings.Contains(u, ".."):
		return fmt.Errorf("user name %q contains \"..\"", u)
	}
	for _, r := range u {
		if r <= ' ' || unicode.IsControl(r) || unicode.IsSpace(r) || r == utf8.RuneError {
			return fmt.Errorf("user name %q contains a space or control character", u)
		}
	}
	return nil
}

// User is one user's replica on this host.
type User struct {
	Name     string
	Home     string
	Location string // maildir.ParseLocation syntax: a path or maildir:PATH[:LAYOUT=fs][:UTF8][:INDEX=DIR]
	// UID and GID own the mail (-1: unknown; then the mail root's owner).
	UID, GID int
}

// ErrUnknownUser is returned for a user the user source does not know.
var ErrUnknownUser = errors.New("unknown user")

// UserSource finds users' mail.
type UserSource struct {
	c *Config

	mu     sync.Mutex
	listed map[string]User // passwd-file or command, read once
	err    error
	done   bool
}

// Users returns the configured user source, or an error if none is set.
func (c *Config) UserSource() (*UserSource, error) {
	if c.Users.PasswdFile == "" && c.Users.Path == "" && c.Users.Command == "" {
		where := "no configuration file"
		if c.Path != "" {
			where = c.Path
		}
		return nil, fmt.Errorf("no user source configured (%s): set [users] passwd_file, path or command in twinbox.toml, or TWINBOX_USERS_PATH", where)
	}
	return &UserSource{c: c}, nil
}

// Lookup resolves a user to its replica. A user is known when the
// passwd-file or the command lists it, or, with a path template alone,
// when its mail root exists.
func (s *UserSource) Lookup(ctx context.Context, name string) (User, error) {
	if err := ValidUserName(name); err != nil {
		return User{}, err
	}
	u := User{Name: name, UID: -1, GID: -1}
	switch {
	case s.c.Users.PasswdFile != "" || s.c.Users.Command != "":
		m, err := s.list(ctx)
		if err != nil {
			return User{}, err
		}
		lu, ok := m[name]
		if !ok {
			return User{}, fmt.Errorf("user %s: %w", name, ErrUnknownUser)
		}
		u = lu
		if u.Location == "" {
			if s.c.Users.Path == "" {
				return User{}, fmt.Errorf("user %s: the passwd-file gives no mail location (userdb_mail=) and users.path is not set", name)
			}
			loc, err := expand(s.c.Users.Path, name, u.Home, s.c.Users.PasswdFile != "")
			if err != nil {
				return User{}, fmt.Errorf("user %s: %w", name, err)
			}
			u.Location = loc
		}
	default:
		loc, err := expand(s.c.Users.Path, name, "", false)
		if err != nil {
			return User{}, fmt.Errorf("user %s: %w", name, err)
		}
		u.Location = loc
		fi, err := os.Stat(locationPath(loc))
		if err != nil || !fi.IsDir() {
			return User{}, fmt.Errorf("user %s: %w (no mail at %s)", name, ErrUnknownUser, locationPath(loc))
		}
	}
	if err := s.owner(&u); err != nil {
		return User{}, fmt.Errorf("user %s: %w", name, err)
	}
	return u, nil
}

// List returns the known users (for a path template alone: nil, the users
// are whatever directories exist).
func (s *UserSource) List(ctx context.Context) ([]string, error) {
	if s.c.Users.PasswdFile == "" && s.c.Users.Command == "" {
		return nil, nil
	}
	m, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	return out, nil
}

func (s *UserSource) list(ctx context.Context) (map[string]User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return s.listed, s.err
	}
	if s.c.Users.PasswdFile != "" {
		s.listed, s.err = readPasswdFile(s.c.Users.PasswdFile)
	} else {
		s.listed, s.err = runUserCommand(ctx, s.c.Users.Command)
	}
	s.done = true
	return s.listed, s.err
}

// maxUsers bounds what a user list may hold.
const maxUsers = 1 << 20

// readPasswdFile reads a Dovecot passwd-file:
// user:password:uid:gid:gecos:home:shell:extra_fields
func readPasswdFile(path string) (map[string]User, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("users.passwd_file: %w", err)
	}
	defer f.Close()
	m := map[string]User{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		fs := strings.SplitN(l, ":", 8)
		name := fs[0]
		if err := ValidUserName(name); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		u := User{Name: name, UID: -1, GID: -1}
		if len(fs) > 2 && fs[2] != "" {
			if u.UID, err = strconv.Atoi(fs[2]); err != nil || u.UID < 0 {
				return nil, fmt.Errorf("%s:%d: user %s: bad uid %q", path, line, name, fs[2])
			}
		}
		if len(fs) > 3 && fs[3] != "" {
			if u.GID, err = strconv.Atoi(fs[3]); err != nil || u.GID < 0 {
				return nil, fmt.Errorf("%s:%d: user %s: bad gid %q", path, line, name, fs[3])
			}
		}
		if len(fs) > 5 {
			u.Home = fs[5]
		}
		if len(fs) > 7 {
			for _, kv := range strings.Fields(fs[7]) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "userdb_mail", "mail":
					u.Location = dovecotLocation(v, u.Home)
				case "userdb_home", "home":
					u.Home = v
				case "userdb_uid", "uid":
					if n, err := strconv.Atoi(v); err == nil {
						u.UID = n
					}
				case "userdb_gid", "gid":
					if n, err := strconv.Atoi(v); err == nil {
						u.GID = n
					}
				}
			}
		}
		if len(m) >= maxUsers {
			return nil, fmt.Errorf("%s: more than %d users", path, maxUsers)
		}
		m[name] = u
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", path, line+1, err)
	}
	return m, nil
}

// dovecotLocation turns a Dovecot mail location (maildir:~/Maildir:INDEX=...)
// into twinbox's: the path with ~ expanded, every option kept as given.
// maildir.ParseLocation then takes those it understands (LAYOUT=, UTF-8,
// INDEX=) and refuses the others with an error that names the user: an
// option dropped here unseen would misread the folder names (UTF-8) or
// work beside control files kept elsewhere (CONTROL=).
func dovecotLocation(v, home string) string {
	v = strings.TrimPrefix(v, "maildir:")
	p, rest, _ := strings.Cut(v, ":")
	if p == "~" {
		p = home
	} else if strings.HasPrefix(p, "~/") {
		p = filepath.Join(home, p[2:])
	}
	if rest == "" {
		return "maildir:" + p
	}
	return "maildir:" + p + ":" + rest
}

// runUserCommand runs the user-listing command: one user per line, the first
// word of each. It must finish within a minute.
func runUserCommand(ctx context.Context, command string) (map[string]User, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, n: 4096}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("users.command: %w", err)
	}
	m := map[string]User{}
	sc := bufio.NewScanner(io.LimitReader(out, 256<<20))
	var bad error
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if err := ValidUserName(f[0]); err != nil {
			if bad == nil {
				bad = fmt.Errorf("users.command listed a bad user name: %v", err)
			}
			continue
		}
		if len(m) >= maxUsers {
			bad = fmt.Errorf("users.command listed more than %d users", maxUsers)
			break
		}
		m[f[0]] = User{Name: f[0], UID: -1, GID: -1}
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("users.command %q: %v: %s", command, err, strings.TrimSpace(stderr.String()))
	}
	if bad != nil {
		return nil, bad
	}
	return m, nil
}

type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
		} else {
			l.b.Write(p)
		}
	}
	return len(p), nil
}

// expand fills a mail location template for user.
func expand(t, name, home string, haveHome bool) (string, error) {
	local, domain, _ := strings.Cut(name, "@")
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] != '%' {
			b.WriteByte(t[i])
			continue
		}
		i++
		if i >= len(t) {
			return "", errors.New("ends in '%'")
		}
		key := string(t[i])
		if t[i] == '{' {
			end := strings.IndexByte(t[i:], '}')
			if end < 0 {
				return "", errors.New("unclosed %{")
			}
			key = t[i+1 : i+end]
			i += end
		}
		switch key {
		case "%":
			b.WriteByte('%')
		case "u", "user":
			b.WriteString(name)
		case "n", "username":
			b.WriteString(local)
		case "d", "domain":
			if domain == "" {
				return "", fmt.Errorf("%%%s: user %q has no domain", key, name)
			}
			b.WriteString(domain)
		case "h", "home":
			if !haveHome {
				return "", fmt.Errorf("%%%s: no home directory without users.passwd_file", key)
			}
			if home == "" {
				return "", fmt.Errorf("%%%s: user %q has no home in the passwd-file", key, name)
			}
			b.WriteString(home)
		default:
			return "", fmt.Errorf("unknown placeholder %%%s", key)
		}
	}
	return b.String(), nil
}

// locationPath is a location's root directory.
func locationPath(loc string) string {
	if p, ok := strings.CutPrefix(loc, "maildir:"); ok {
		p, _, _ = strings.Cut(p, ":")
		return p
	}
	return loc
}

// owner fills in who owns u's mail: the configured uid/gid, else the
// passwd-file's, else the owner of the mail root (or of its nearest
// existing parent).
func (s *UserSource) owner(u *User) error {
	if s.c.Users.UID != "" {
		id, err := lookupID(s.c.Users.UID, false)
		if err != nil {
			return fmt.Errorf("users.uid: %w", err)
		}
		u.UID = id
	}
	if s.c.Users.GID != "" {
		id, err := lookupID(s.c.Users.GID, true)
		if err != nil {
			return fmt.Errorf("users.gid: %w", err)
		}
		u.GID = id
	}
	if u.UID >= 0 && u.GID >= 0 {
		return nil
	}
	p := filepath.Clean(locationPath(u.Location))
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if u.UID < 0 {
					u.UID = int(st.Uid)
				}
				if u.GID < 0 {
					u.GID = int(st.Gid)
				}
			}
			return nil
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}

func lookupID(s string, group bool) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	var id string
	if group {
		g, err := user.LookupGroup(s)
		if err != nil {
			return 0, err
		}
		id = g.Gid
	} else {
		u, err := user.Lookup(s)
		if err != nil {
			return 0, err
		}
		id = u.Uid
	}
	return strconv.Atoi(id)
}

// MatchUser reports whether name matches pattern (* any run, ? one
// character; no other syntax).
func MatchUser(pattern, name string) bool {
	ok, err := filepath.Match(strings.ReplaceAll(strings.ReplaceAll(pattern, "\\", "\\\\"), "[", "\\["), name)
	return err == nil && ok
}
