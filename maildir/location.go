package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Layout is how mailbox names map to directories under the root.
type Layout int

const (
	// LayoutMaildirPP is Maildir++ (Dovecot's default): folder "a/b" is the
	// directory ".a.b" directly under the root.
	LayoutMaildirPP Layout = iota
	// LayoutFS is Dovecot's LAYOUT=fs: folder "a/b" is the directory "a/b".
	LayoutFS
)

func (l Layout) String() string {
	switch l {
	case LayoutMaildirPP:
		return "maildir++"
	case LayoutFS:
		return "fs"
	default:
		return fmt.Sprintf("Layout(%d)", int(l))
	}
}

// Location is a user's Maildir root and how its folders are laid out, the
// parts of a Dovecot mail_location that twinbox understands.
type Location struct {
	Root   string // absolute path of the root; INBOX lives here
	Layout Layout
	UTF8   bool // folder names on disk are UTF-8, not modified UTF-7
	// Index is Dovecot's INDEX= (its index files kept outside the Maildir,
	// or MEMORY), as given; twinbox never reads or writes there. Empty:
	// in each folder, Dovecot's default.
	Index string
}

// ParseLocation parses "PATH" or
// "maildir:PATH[:LAYOUT=fs][:UTF8][:INDEX=DIR]" (Dovecot's mail_location
// syntax; "::" in PATH stands for a literal ":", LAYOUT=maildir++ is
// accepted too, and UTF-8, Dovecot's spelling, as UTF8). PATH is made
// absolute. Other options (CONTROL=, which moves the dovecot-uidlist files
// twinbox reads and writes out of the folders, among them), other mailbox
// formats, an empty PATH and a PATH starting with "~" (which Dovecot would
// expand but we cannot) are errors.
func ParseLocation(s string) (Location, error) {
	var loc Location
	var fields []string
	if rest, ok := strings.CutPrefix(s, "maildir:"); ok {
		fields = splitLocation(rest)
	} else {
		if i := strings.IndexByte(s, ':'); i > 0 && isFormatName(s[:i]) {
			return loc, fmt.Errorf("mail location %q: unsupported mailbox format %q (only maildir)", s, s[:i])
		}
		fields = []string{s}
	}
	p := fields[0]
	if p == "" {
		return loc, fmt.Errorf("mail location %q: empty path", s)
	}
	if strings.HasPrefix(p, "~") {
		return loc, fmt.Errorf("mail location %q: \"~\" is not expanded; give an absolute path", s)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return loc, fmt.Errorf("mail location %q: %w", s, err)
	}
	loc.Root = abs
	for _, opt := range fields[1:] {
		key, val, hasVal := strings.Cut(opt, "=")
		switch {
		case key == "LAYOUT" && hasVal && strings.EqualFold(val, "fs"):
			loc.Layout = LayoutFS
		case key == "LAYOUT" && hasVal && strings.EqualFold(val, "maildir++"):
			loc.Layout = LayoutMaildirPP
		case (key == "UTF8" || key == "UTF-8") && !hasVal:
			loc.UTF8 = true
		case key == "INDEX" && hasVal && val != "":
			loc.Index = val
		case key == "CONTROL":
			return Location{}, fmt.Errorf("mail location %q: %q: Dovecot's control files (dovecot-uidlist, dovecot-keywords) kept outside the Maildir are not supported: twinbox reads and writes them in each folder", s, opt)
		default:
			return Location{}, fmt.Errorf("mail location %q: unsupported option %q", s, opt)
		}
	}
	return loc, nil
}

// isFormatName reports whether s looks like a Dovecot mailbox format name
// ("mbox", "sdbox", ...), as opposed to the start of a path.
func isFormatName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// splitLocation splits on ":", where "::" is a literal ":".
func splitLocation(s string) []string {
	var fields []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			cur.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ':' {
			cur.WriteByte(':')
			i++
			continue
		}
		fields = append(fields, cur.String())
		cur.Reset()
	}
	return append(fields, cur.String())
}

// String returns the location in mail_location syntax; ParseLocation
// returns l again.
func (l Location) String() string {
	s := "maildir:" + strings.ReplaceAll(l.Root, ":", "::")
	if l.Layout == LayoutFS {
		s += ":LAYOUT=fs"
	}
	if l.UTF8 {
		s += ":UTF8"
	}
	if l.Index != "" {
		s += ":INDEX=" + strings.ReplaceAll(l.Index, ":", "::")
	}
	return s
}

// Separator is the hierarchy separator Dovecot uses for this layout in
// storage names (and so in version 1 subscriptions files): "." for Maildir++,
// "/" for LAYOUT=fs.
func (l Location) Separator() byte {
	if l.Layout == LayoutFS {
		return '/'
	}
	return '.'
}

// NameError reports a mailbox name (or directory) that cannot be used.
type NameError struct {
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("invalid mailbox name %q: %s", e.Name, e.Reason)
}

// Inbox is the name of the mailbox stored in the root itself.
const Inbox = "INBOX"

// IsInbox reports whether name is INBOX (case-insensitive, as in IMAP).
func IsInbox(name string) bool { return strings.EqualFold(name, Inbox) }

// reservedFS are names a LAYOUT=fs folder level cannot have: they are the
// parent mailbox's own subdirectories.
var reservedFS = map[string]bool{"cur": true, "new": true, "tmp": true}

// encodeName validates a mailbox name and returns its on-disk name levels
// (nil for INBOX).
func (l Location) encodeName(name string) ([]string, error) {
	bad := func(reason string) ([]string, error) { return nil, &NameError{Name: name, Reason: reason} }
	if name == "" {
		return bad("empty name")
	}
	if !utf8.ValidString(name) {
		return bad("not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return bad("contains a control character")
		}
	}
	if IsInbox(name) {
		return nil, nil
	}
	if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
		return bad("leading or trailing \"/\"")
	}
	parts := strings.Split(name, "/")
	enc := make([]string, len(parts))
	for i, p := range parts {
		switch {
		case p == "":
			return bad("empty hierarchy level")
		case p == "." || p == "..":
			return bad(fmt.Sprintf("hierarchy level %q", p))
		case l.Layout == LayoutMaildirPP && strings.Contains(p, "."):
			return bad("contains \".\", the Maildir++ hierarchy separator")
		case l.Layout == LayoutFS && strings.HasPrefix(p, "."):
			return bad("a hierarchy level starts with \".\"")
		case l.Layout == LayoutFS && reservedFS[p]:
			return bad(fmt.Sprintf("hierarchy level %q is reserved for the maildir's own subdirectories", p))
		}
		e := p
		if !l.UTF8 {
			e = EncodeMUTF7(p)
		}
		if len(e) > 255 {
			return bad("a hierarchy level is longer than 255 bytes on disk")
		}
		enc[i] = e
	}
	if l.Layout == LayoutMaildirPP {
		if n := 1 + len(strings.Join(enc, ".")); n > 255 {
			return bad(fmt.Sprintf("Maildir++ directory name is %d bytes, more than 255", n))
		}
	}
	return enc, nil
}

// NormalizeName validates name and returns it with INBOX spelt "INBOX".
func (l Location) NormalizeName(name string) (string, error) {
	enc, err := l.encodeName(name)
	if err != nil {
		return "", err
	}
	if enc == nil {
		return Inbox, nil
	}
	return name, nil
}

// MailboxDir returns the directory of the mailbox called name (a UTF-8 IMAP
// name with "/" as separator). The name is validated (see NameError for the
// reasons) and the result is always inside Root. INBOX, in any case, is Root
// itself.
func (l Location) MailboxDir(name string) (string, error) {
	if l.Root == "" {
		return "", errors.New("maildir: location has no root")
	}
	enc, err := l.encodeName(name)
	if err != nil {
		return "", err
	}
	root := filepath.Clean(l.Root)
	if enc == nil {
		return root, nil
	}
	var dir string
	if l.Layout == LayoutMaildirPP {
		dir = filepath.Join(root, "."+strings.Join(enc, "."))
	} else {
		dir = filepath.Join(append([]string{root}, enc...)...)
	}
	if !within(root, dir) {
		return "", &NameError{Name: name, Reason: "resolves outside the mail root"}
	}
	return dir, nil
}

// joinEncoded is the directory of a mailbox relative to Root from its
// encoded hierarchy levels (encodeName's result, not nil).
func (l Location) joinEncoded(enc []string) string {
	if l.Layout == LayoutMaildirPP {
		return "." + strings.Join(enc, ".")
	}
	return strings.Join(enc, "/")
}

// within reports whether dir is strictly inside root (both clean).
func within(root, dir string) bool {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == "." || filepath.IsAbs(rel) {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// NameFromDir is the inverse of MailboxDir: it turns a directory relative to
// Root (".a.b" for Maildir++, "a/b" for LAYOUT=fs; "" or "." for the root)
// into the mailbox name ("a/b", or "INBOX"), decoding modified UTF-7 unless
// UTF8 is set. It fails with a *NameError unless MailboxDir of the result is
// exactly Root/rel, so every directory has at most one name (".INBOX", a
// non-canonical encoding or a reserved name are rejected).
func (l Location) NameFromDir(rel string) (string, error) {
	if rel == "" || rel == "." {
		return Inbox, nil
	}
	bad := func(reason string) (string, error) { return "", &NameError{Name: rel, Reason: reason} }
	var enc []string
	switch l.Layout {
	case LayoutMaildirPP:
		if !strings.HasPrefix(rel, ".") || strings.ContainsRune(rel, '/') {
			return bad("not a Maildir++ folder directory (\".Name\")")
		}
		enc = strings.Split(rel[1:], ".")
	case LayoutFS:
		enc = strings.Split(rel, "/")
	default:
		return bad("unknown layout")
	}
	parts := make([]string, len(enc))
	for i, e := range enc {
		if l.UTF8 {
			parts[i] = e
			continue
		}
		p, err := DecodeMUTF7(e)
		if err != nil {
			return bad(err.Error())
		}
		parts[i] = p
	}
	name := strings.Join(parts, "/")
	if l.Root != "" {
		// The round trip without the path work (a listing does this for
		// every folder on every sync): when the name encodes back to rel
		// itself, MailboxDir(name) is Root/rel. encodeName refused every
		// empty, "." and ".." level and every "/" inside one, so rel is
		// then a clean relative path strictly inside Root. Anything else
		// takes the full check below, which says why it fails.
		if enc, err := l.encodeName(name); err == nil && enc != nil && l.joinEncoded(enc) == rel {
			return name, nil
		}
	}
	dir, err := l.MailboxDir(name)
	if err != nil {
		var ne *NameError
		if errors.As(err, &ne) {
			return bad(ne.Reason)
		}
		return "", err
	}
	if dir != filepath.Join(l.Root, rel) {
		return bad(fmt.Sprintf("not the directory of mailbox %q", name))
	}
	return name, nil
}

// MailboxDir is a mailbox found on disk.
type MailboxDir struct {
	Name string // mailbox name, "/"-separated, INBOX for the root
	Dir  string // absolute directory
}

// ListMailboxes returns every mailbox directory that has a cur/
// subdirectory: INBOX first (if Root/cur exists), the rest sorted by Name.
// Maildir++ looks at the ".Name" directories in Root only; LAYOUT=fs walks
// subdirectories recursively, skipping tmp/, new/, cur/, dot-directories and
// symbolic links. Directories whose names do not decode to a valid mailbox
// name (see NameFromDir) are skipped silently. A missing Root is an error
// that wraps fs.ErrNotExist.
func (l Location) ListMailboxes() ([]MailboxDir, error) {
	dirs, _, err := l.listMailboxes(false)
	return dirs, err
}

// ListMailboxesAndHidden is ListMailboxes and HiddenMailboxes together:
// under Maildir++ both are in the mail root, read once for both (a scan
// lists them on both sides of every sync).
func (l Location) ListMailboxesAndHidden() (dirs, hidden []MailboxDir, err error) {
	if l.Layout != LayoutMaildirPP {
		if dirs, err = l.ListMailboxes(); err != nil {
			return nil, nil, err
		}
		hidden, err = l.HiddenMailboxes()
		return dirs, hidden, err
	}
	return l.listMailboxes(true)
}

func (l Location) listMailboxes(withHidden bool) (dirs, hidden []MailboxDir, err error) {
	if l.Root == "" {
		return nil, nil, errors.New("maildir: location has no root")
	}
	root := filepath.Clean(l.Root)
	if _, err := os.Stat(root); err != nil {
		return nil, nil, fmt.Errorf("listing mailboxes in %s: %w", root, err)
	}
	var inbox []MailboxDir
	if isDir(filepath.Join(root, "cur")) {
		inbox = append(inbox, MailboxDir{Name: Inbox, Dir: root})
	}
	var rest []MailboxDir
	if l.Layout == LayoutMaildirPP {
		// os.ReadDir, keeping the directory open: each folder's cur/ is
		// looked up relative to it (a sync lists both roots, and a path
		// walk from / per folder cost more than the lookup).
		f, err := os.Open(root)
		if err != nil {
			return nil, nil, fmt.Errorf("listing mailboxes in %s: %w", root, err)
		}
		defer f.Close()
		entries, err := f.ReadDir(-1)
		if err != nil {
			return nil, nil, fmt.Errorf("listing mailboxes in %s: %w", root, err)
		}
		slices.SortFunc(entries, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
		in := dirIn{f: f, path: root}
		rest = l.listMaildirPP(in, entries)
		if withHidden {
			hidden = hiddenIn(in, entries) // HiddenDir() is the root
		}
	} else {
		rest, err = l.listFS(root, "")
	}
	if err != nil {
		return nil, nil, err
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i].Name < rest[j].Name })
	return append(inbox, rest...), hidden, nil
}

func (l Location) listMaildirPP(root dirIn, entries []os.DirEntry) []MailboxDir {
	var out []MailboxDir
	for _, e := range entries {
		n := e.Name()
		if len(n) < 2 || n[0] != '.' || n == ".." {
			continue
		}
		if !root.isDir(n + "/cur") {
			continue
		}
		dir := filepath.Join(root.path, n)
		name, err := l.NameFromDir(n)
		if err != nil {
			continue
		}
		out = append(out, MailboxDir{Name: name, Dir: dir})
	}
	return out
}

func (l Location) listFS(root, rel string) ([]MailboxDir, error) {
	dir := filepath.Join(root, rel)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if rel != "" && errors.Is(err, fs.ErrNotExist) {
			return nil, nil // removed while we walked
		}
		return nil, fmt.Errorf("listing mailboxes in %s: %w", dir, err)
	}
	var out []MailboxDir
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || strings.HasPrefix(n, ".") || reservedFS[n] {
			continue
		}
		childRel := path.Join(rel, n)
		childDir := filepath.Join(root, childRel)
		if isDir(filepath.Join(childDir, "cur")) {
			if name, err := l.NameFromDir(childRel); err == nil {
				out = append(out, MailboxDir{Name: name, Dir: childDir})
			}
		}
		sub, err := l.listFS(root, childRel)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// dirIn is an open directory (f) and its path.
type dirIn struct {
	f    *os.File
	path string
}

// isDir is isDir(path/rel), looked up relative to the open directory
// where the system can (isDirAt).
func (d dirIn) isDir(rel string) bool {
	if ok, done := isDirAt(d.f, rel); done {
		return ok
	}
	return isDir(filepath.Join(d.path, rel))
}

// CreateMailbox creates the directories of mailbox name (see
// CreateMailboxDirs) and returns its directory. For a Maildir++ folder it
// also creates the empty "maildirfolder" file the Maildir++ spec asks for
// (Dovecot does the same).
func (l Location) CreateMailbox(name string) (string, error) {
	dir, err := l.MailboxDir(name)
	if err != nil {
		return "", err
	}
	if err := CreateMailboxDirs(dir); err != nil {
		return "", err
	}
	if l.Layout == LayoutMaildirPP && dir != filepath.Clean(l.Root) {
		p := filepath.Join(dir, "maildirfolder")
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case err == nil:
			if err := f.Close(); err != nil {
				return "", fmt.Errorf("creating %s: %w", p, err)
			}
			if err := chownLike(p, "", dir); err != nil {
				return "", fmt.Errorf("creating %s: %w", p, err)
			}
			if err := SyncDir(dir); err != nil {
				return "", err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return "", fmt.Errorf("creating %s: %w", p, err)
		}
	}
	return dir, nil
}
