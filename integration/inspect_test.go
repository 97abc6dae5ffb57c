package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The inspector reads a replica from outside, with its own parsers (not
// twinbox's), and reports every way in which it is not a clean Maildir that
// Dovecot could serve.

// msgFile is one message file in cur/ or new/.
type msgFile struct {
	sub, name, base string
	flags           string // letters after ":2,"
	sha             string
	size, mtime     int64
}

// uidRec is one dovecot-uidlist record.
type uidRec struct {
	uid  uint32
	ext  map[byte]string
	base string
}

// guid is the message GUID: the G field, else the base name (Dovecot's rule).
func (r uidRec) guid() string {
	if g := r.ext['G']; g != "" {
		return g
	}
	return r.base
}

// uidlist is a parsed dovecot-uidlist, version 3.
type uidlist struct {
	uidValidity, nextUID uint32
	guid                 string
	recs                 []uidRec
}

// parseUidlist parses a version 3 dovecot-uidlist strictly: a complete last
// line, V N and G in the header, UIDs non-zero, strictly ascending and below
// NEXTUID, " :" before every file name, no base named twice (a GUID named
// twice is checked among the records that have files, by inspectBox). With
// appended, a UID at or above NEXTUID raises it instead, as in Dovecot's
// reader: Dovecot appends records for new files without rewriting the header.
func parseUidlist(data []byte, appended bool) (*uidlist, error) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("empty or no final newline")
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	hdr := strings.Fields(lines[0])
	if len(hdr) == 0 || hdr[0] != "3" {
		return nil, fmt.Errorf("header %q: not version 3", lines[0])
	}
	ul := &uidlist{}
	for _, f := range hdr[1:] {
		switch f[0] {
		case 'V', 'N':
			n, err := strconv.ParseUint(f[1:], 10, 32)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("header %q: bad %c", lines[0], f[0])
			}
			if f[0] == 'V' {
				ul.uidValidity = uint32(n)
			} else {
				ul.nextUID = uint32(n)
			}
		case 'G':
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(f[1:]) {
				return nil, fmt.Errorf("header %q: bad mailbox GUID", lines[0])
			}
			ul.guid = f[1:]
		}
	}
	if ul.uidValidity == 0 || ul.nextUID == 0 || ul.guid == "" {
		return nil, fmt.Errorf("header %q: V, N or G missing", lines[0])
	}
	var prev uint32
	bases := map[string]uint32{}
	for i, l := range lines[1:] {
		left, name, ok := strings.Cut(l, " :")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d %q: no \" :<file name>\"", i+2, l)
		}
		fs := strings.Fields(left)
		n, err := strconv.ParseUint(fs[0], 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("line %d %q: bad UID", i+2, l)
		}
		r := uidRec{uid: uint32(n), ext: map[byte]string{}}
		r.base, _, _ = strings.Cut(name, ":")
		for _, e := range fs[1:] {
			if e[0] < 'A' || e[0] > 'Z' {
				return nil, fmt.Errorf("line %d %q: bad field %q", i+2, l, e)
			}
			r.ext[e[0]] = e[1:]
		}
		if r.uid <= prev {
			return nil, fmt.Errorf("line %d: UID %d after %d: not strictly ascending", i+2, r.uid, prev)
		}
		if r.uid >= ul.nextUID && appended {
			ul.nextUID = r.uid + 1
		}
		if r.uid >= ul.nextUID {
			return nil, fmt.Errorf("line %d: UID %d not below NEXTUID %d", i+2, r.uid, ul.nextUID)
		}
		if u, dup := bases[r.base]; dup {
			return nil, fmt.Errorf("UIDs %d and %d both name %s", u, r.uid, r.base)
		}
		bases[r.base] = r.uid
		prev = r.uid
		ul.recs = append(ul.recs, r)
	}
	return ul, nil
}

// mbox is one mailbox of a replica as found on disk.
type mbox struct {
	name     string
	dir      string
	files    []msgFile
	ul       *uidlist
	keywords []string
}

// inventory is a replica as found on disk, with what is wrong with it.
type inventory struct {
	root     string
	appended bool // Dovecot may have appended to the uidlists
	boxes    map[string]*mbox
	problems []string
}

func (inv *inventory) problem(format string, args ...any) {
	inv.problems = append(inv.problems, fmt.Sprintf(format, args...))
}

var atomicTempRE = regexp.MustCompile(`^\..*\.tmp[0-9a-f]+$`)

// inspect reads a Maildir++ root (ASCII folder names). Problems: files left
// in a tmp/ directory, twinbox's temporary mailbox directories, lock files,
// temporary files of an atomic write, a dovecot-uidlist that is missing or
// does not parse strictly, a message file the uidlist does not list, two
// files with one base name or one content in a mailbox, an S= size that is
// not the file's size.
//
// Uidlists with records appended after the header's NEXTUID are accepted
// (the UID raises it, as in Dovecot's reader): Dovecot appends records for
// new files without rewriting the header, and so does twinbox (design §9
// item 13). A rewrite by twinbox never has a NEXTUID at or below a UID
// (maildir.WriteUidlist validates that). dovecotTouched is kept for the
// callers' record; it no longer changes what is accepted.
func inspect(t testing.TB, root string, dovecotTouched bool) *inventory {
	t.Helper()
	_ = dovecotTouched
	inv := &inventory{root: root, appended: true, boxes: map[string]*mbox{}}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatalf("inspect %s: %v", root, err)
	}
	dirs := map[string]string{"INBOX": root}
	for _, e := range ents {
		switch n := e.Name(); {
		case e.IsDir() && strings.HasPrefix(n, ".twinbox-tmp-"):
			inv.problem("stray temporary mailbox directory %s", n)
		case e.IsDir() && strings.HasPrefix(n, ".") && n != "." && n != "..":
			dirs[strings.ReplaceAll(n[1:], ".", "/")] = filepath.Join(root, n)
		case strings.HasSuffix(n, ".lock"):
			inv.problem("lock file left: %s", n)
		case atomicTempRE.MatchString(n):
			inv.problem("temporary file left: %s", n)
		}
	}
	for name, dir := range dirs {
		inv.boxes[name] = inspectBox(inv, name, dir)
	}
	return inv
}

func inspectBox(inv *inventory, name, dir string) *mbox {
	b := &mbox{name: name, dir: dir}
	where := func(s string) string { return fmt.Sprintf("mailbox %q: %s", name, s) }
	_ = where
	if name != "INBOX" {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			switch n := e.Name(); {
			case strings.HasSuffix(n, ".lock"):
				inv.problem("%s", where("lock file left: "+n))
			case atomicTempRE.MatchString(n):
				inv.problem("%s", where("temporary file left: "+n))
			}
		}
	}
	tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, e := range tmps {
		inv.problem("%s", where("stray file in tmp/: "+e.Name()))
	}
	byBase := map[string]string{}
	bySHA := map[string]string{}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			inv.problem("%s", where(fmt.Sprintf("no %s/: %v", sub, err)))
			continue
		}
		for _, e := range ents {
			p := filepath.Join(dir, sub, e.Name())
			data, err := os.ReadFile(p)
			if err != nil {
				inv.problem("%s", where(err.Error()))
				continue
			}
			fi, err := e.Info()
			if err != nil {
				inv.problem("%s", where(err.Error()))
				continue
			}
			f := msgFile{sub: sub, name: e.Name(), sha: hashOf(data), size: int64(len(data)), mtime: fi.ModTime().Unix()}
			var info string
			f.base, info, _ = strings.Cut(e.Name(), ":")
			f.flags, _ = strings.CutPrefix(info, "2,")
			if other, dup := byBase[f.base]; dup {
				inv.problem("%s", where(fmt.Sprintf("two files with base %s: %s and %s/%s", f.base, other, sub, e.Name())))
			}
			byBase[f.base] = sub + "/" + e.Name()
			if other, dup := bySHA[f.sha]; dup {
				inv.problem("%s", where(fmt.Sprintf("duplicate message: %s and %s/%s have the same content", other, sub, e.Name())))
			}
			bySHA[f.sha] = sub + "/" + e.Name()
			if m := regexp.MustCompile(`,S=(\d+)`).FindStringSubmatch(f.base); m != nil {
				if s, _ := strconv.ParseInt(m[1], 10, 64); s != f.size {
					inv.problem("%s", where(fmt.Sprintf("%s/%s: S=%d but the file has %d bytes", sub, e.Name(), s, f.size)))
				}
			}
			b.files = append(b.files, f)
		}
	}
	sort.Slice(b.files, func(i, j int) bool { return b.files[i].base < b.files[j].base })
	data, err := os.ReadFile(filepath.Join(dir, "dovecot-uidlist"))
	if err != nil {
		inv.problem("%s", where(fmt.Sprintf("dovecot-uidlist: %v", err)))
		return b
	}
	if b.ul, err = parseUidlist(data, inv.appended); err != nil {
		inv.problem("%s", where(fmt.Sprintf("dovecot-uidlist: %v", err)))
		return b
	}
	// A record without its file is an expunged message that Dovecot (and
	// twinbox) drop from the list later: not a problem.
	listed := map[string]bool{}
	have := map[string]bool{}
	for _, f := range b.files {
		have[f.base] = true
	}
	guids := map[string]uint32{}
	for _, r := range b.ul.recs {
		listed[r.base] = true
		if !have[r.base] {
			continue // (an expunged message's record may name the GUID of a live one: a renumbered message's old record)
		}
		if u, dup := guids[r.guid()]; dup {
			inv.problem("%s", where(fmt.Sprintf("dovecot-uidlist: UIDs %d and %d both have GUID %s", u, r.uid, r.guid())))
		}
		guids[r.guid()] = r.uid
	}
	for _, f := range b.files {
		if !listed[f.base] {
			inv.problem("%s", where(fmt.Sprintf("%s/%s is not in dovecot-uidlist", f.sub, f.name)))
		}
	}
	if kw, err := os.ReadFile(filepath.Join(dir, "dovecot-keywords")); err == nil {
		for _, l := range strings.Split(string(kw), "\n") {
			if i, n, ok := strings.Cut(l, " "); ok {
				idx, err := strconv.Atoi(i)
				if err != nil || idx < 0 || idx > 25 {
					inv.problem("%s", where(fmt.Sprintf("dovecot-keywords: bad line %q", l)))
					continue
				}
				for len(b.keywords) <= idx {
					b.keywords = append(b.keywords, "")
				}
				b.keywords[idx] = n
			}
		}
	}
	return b
}

// flagNames turns a file's flag letters into sorted names: system flags as
// letters, keywords by name through the mailbox's dovecot-keywords.
func (b *mbox) flagNames(letters string) string {
	var sys []byte
	var kw []string
	for i := 0; i < len(letters); i++ {
		c := letters[i]
		if c >= 'a' && c <= 'z' {
			k := int(c - 'a')
			if k < len(b.keywords) && b.keywords[k] != "" {
				kw = append(kw, b.keywords[k])
			} else {
				kw = append(kw, fmt.Sprintf("?%c", c))
			}
			continue
		}
		sys = append(sys, c)
	}
	sort.Slice(sys, func(i, j int) bool { return sys[i] < sys[j] })
	sort.Strings(kw)
	return string(sys) + " " + strings.Join(kw, " ")
}

// messages maps UID -> "guid sha flags" for comparisons between replicas.
func (b *mbox) messages() map[uint32]string {
	out := map[uint32]string{}
	if b.ul == nil {
		return out
	}
	files := map[string]msgFile{}
	for _, f := range b.files {
		files[f.base] = f
	}
	for _, r := range b.ul.recs {
		f, ok := files[r.base]
		if !ok {
			continue // expunged
		}
		out[r.uid] = fmt.Sprintf("%s %s %d [%s]", r.guid(), f.sha, f.mtime, b.flagNames(f.flags))
	}
	return out
}

// checkCorpus reports delivered messages missing from their mailbox or
// with other system flags than expected, expunged ones that are back, and,
// when exact, files whose content was never delivered to their mailbox.
func (inv *inventory) checkCorpus(c *corpus, exact bool) {
	want := map[string]map[string]*message{} // mailbox -> sha -> message
	for _, m := range c.msgs {
		if want[m.box] == nil {
			want[m.box] = map[string]*message{}
		}
		want[m.box][m.sha] = m
	}
	for name, msgs := range want {
		b := inv.boxes[name]
		if b == nil {
			inv.problem("mailbox %q is missing (%d messages lost)", name, len(msgs))
			continue
		}
		have := map[string]msgFile{}
		for _, f := range b.files {
			have[f.sha] = f
			m := msgs[f.sha]
			switch {
			case m == nil && exact:
				inv.problem("mailbox %q: %s/%s was never delivered there (content %s)", name, f.sub, f.name, f.sha[:12])
			case m == nil:
			case m.gone:
				inv.problem("mailbox %q: %s/%s was expunged but is back", name, f.sub, f.name)
			case sortLetters(onlySystem(f.flags)) != m.flags:
				inv.problem("mailbox %q: %s/%s has flags %q, want %q", name, f.sub, f.name, onlySystem(f.flags), m.flags)
			}
		}
		lost := 0
		for sha, m := range msgs {
			if _, ok := have[sha]; !ok && !m.gone {
				lost++
				if lost <= 5 {
					inv.problem("mailbox %q: message %s (content %s) is lost", name, m.base, sha[:12])
				}
			}
		}
		if lost > 5 {
			inv.problem("mailbox %q: %d messages lost in all", name, lost)
		}
	}
}

// sameMail reports how two inventories differ: mailbox names, mailbox GUID,
// UIDVALIDITY, NEXTUID, and per UID the message GUID, content, INTERNALDATE
// and flags (keywords by name).
func sameMail(a, b *inventory) []string {
	var out []string
	names := map[string]bool{}
	for n := range a.boxes {
		names[n] = true
	}
	for n := range b.boxes {
		names[n] = true
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		x, y := a.boxes[n], b.boxes[n]
		switch {
		case x == nil:
			out = append(out, fmt.Sprintf("mailbox %q only in %s", n, b.root))
			continue
		case y == nil:
			out = append(out, fmt.Sprintf("mailbox %q only in %s", n, a.root))
			continue
		case x.ul == nil || y.ul == nil:
			out = append(out, fmt.Sprintf("mailbox %q: no valid uidlist on one side", n))
			continue
		}
		if x.ul.guid != y.ul.guid || x.ul.uidValidity != y.ul.uidValidity || x.ul.nextUID != y.ul.nextUID {
			out = append(out, fmt.Sprintf("mailbox %q: GUID/UIDVALIDITY/NEXTUID %s/%d/%d vs %s/%d/%d", n,
				x.ul.guid, x.ul.uidValidity, x.ul.nextUID, y.ul.guid, y.ul.uidValidity, y.ul.nextUID))
		}
		mx, my := x.messages(), y.messages()
		var uids []uint32
		for u := range mx {
			uids = append(uids, u)
		}
		for u := range my {
			if _, ok := mx[u]; !ok {
				uids = append(uids, u)
			}
		}
		sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
		bad := 0
		for _, u := range uids {
			if mx[u] != my[u] {
				bad++
				if bad <= 5 {
					out = append(out, fmt.Sprintf("mailbox %q UID %d: %q vs %q", n, u, mx[u], my[u]))
				}
			}
		}
		if bad > 5 {
			out = append(out, fmt.Sprintf("mailbox %q: %d UIDs differ in all", n, bad))
		}
	}
	return out
}

// requireClean fails the test with every problem of the replicas, and with
// their differences.
func requireClean(t testing.TB, c *corpus, exact bool, roots ...string) []*inventory {
	t.Helper()
	return requireClean2(t, c, exact, false, roots...)
}

// requireCleanAfterDovecot is requireClean for replicas that Dovecot wrote to.
func requireCleanAfterDovecot(t testing.TB, roots ...string) []*inventory {
	t.Helper()
	return requireClean2(t, nil, false, true, roots...)
}

func requireClean2(t testing.TB, c *corpus, exact, dovecotTouched bool, roots ...string) []*inventory {
	t.Helper()
	var invs []*inventory
	var all []string
	for _, r := range roots {
		inv := inspect(t, r, dovecotTouched)
		if c != nil {
			inv.checkCorpus(c, exact)
		}
		for _, p := range inv.problems {
			all = append(all, r+": "+p)
		}
		invs = append(invs, inv)
	}
	for i := 1; i < len(invs); i++ {
		all = append(all, sameMail(invs[0], invs[i])...)
	}
	if len(all) > 0 {
		if len(all) > 40 {
			all = append(all[:40], fmt.Sprintf("... and %d more", len(all)-40))
		}
		t.Fatalf("replicas are not clean:\n  %s", strings.Join(all, "\n  "))
	}
	return invs
}

// lockFiles lists the *.lock files in a root and its mailbox directories.
func lockFiles(root string) []string {
	var out []string
	check := func(dir string) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".lock") {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	check(root)
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".") {
			check(filepath.Join(root, e.Name()))
		}
	}
	return out
}

// atomicTempFiles lists the temporary files of atomic writes in a root and
// its mailbox directories.
func atomicTempFiles(root string) []string {
	var out []string
	check := func(dir string) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !e.IsDir() && atomicTempRE.MatchString(e.Name()) {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	check(root)
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".") {
			check(filepath.Join(root, e.Name()))
		}
	}
	return out
}
