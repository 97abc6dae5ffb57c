package integration

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// boxDir is a mailbox's directory under a Maildir++ root (ASCII names only).
func boxDir(root, mailbox string) string {
	if strings.EqualFold(mailbox, "INBOX") {
		return root
	}
	return filepath.Join(root, "."+strings.ReplaceAll(mailbox, "/", "."))
}

// mailGen makes messages and delivers them the way an MTA does: the file is
// written to tmp/ and renamed into new/ (or cur/ with flags, as an IMAP
// APPEND through Dovecot would leave it). Base names are unique per
// generator tag.
type mailGen struct {
	rng *rand.Rand
	tag string
	n   int
	c   *corpus
}

func newMailGen(rng *rand.Rand, tag string, c *corpus) *mailGen {
	return &mailGen{rng: rng, tag: tag, c: c}
}

// message returns a message of about size bytes (at least its header).
// Large ones are a MIME message with a base64 attachment.
func (g *mailGen) message(size int) []byte {
	g.n++
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender%d@example.org\r\nTo: user@example.net\r\n", g.rng.IntN(50))
	fmt.Fprintf(&b, "Subject: %s message %d\r\nMessage-ID: <%s.%d.%d@gen.test>\r\n", g.tag, g.n, g.tag, g.n, g.rng.Uint64())
	fmt.Fprintf(&b, "Date: %s\r\nMIME-Version: 1.0\r\n", time.Unix(1700000000+int64(g.n)*60, 0).UTC().Format(time.RFC1123Z))
	attach := size >= 512<<10
	if attach {
		b.WriteString("Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n--BOUNDARY\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	} else {
		b.WriteString("Content-Type: text/plain\r\n\r\n")
	}
	raw := make([]byte, 57)
	for b.Len() < size {
		for i := range raw {
			raw[i] = byte(g.rng.Uint32())
		}
		b.WriteString(base64.StdEncoding.EncodeToString(raw))
		b.WriteString("\r\n")
	}
	if attach {
		b.WriteString("--BOUNDARY--\r\n")
	}
	return []byte(b.String())
}

// deliver writes msg into mailbox of root with the given flag letters ("" =
// a new message in new/) and records it in the corpus. It returns the base
// name.
func (g *mailGen) deliver(t testing.TB, root, mailbox string, msg []byte, flags string) string {
	t.Helper()
	dir := boxDir(root, mailbox)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		ownLike(t, filepath.Join(dir, sub), root)
	}
	ownLike(t, dir, root)
	mt := time.Unix(1700000000+int64(g.n)*60+int64(g.rng.IntN(60)), 0)
	base := fmt.Sprintf("%d.M%dP%d.gen-%s,S=%d", mt.Unix(), g.n, 4000+g.n%1000, g.tag, len(msg))
	tmp := filepath.Join(dir, "tmp", base)
	if err := os.WriteFile(tmp, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		t.Fatal(err)
	}
	ownLike(t, tmp, root)
	dst := filepath.Join(dir, "new", base)
	if flags != "" {
		dst = filepath.Join(dir, "cur", base+":2,"+flags)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	if g.c != nil {
		g.c.add(mailbox, msg, base, flags)
	}
	return base
}

// ownLike gives p the owner of root, as an MTA delivering as the mail owner
// would, when we run as root (some tests give the Maildirs to another user).
func ownLike(t testing.TB, p, root string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(root)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid == 0 && st.Gid == 0 {
		return
	}
	if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
		t.Fatal(err)
	}
}

// corpus is what was delivered and changed on purpose: what must be in the
// replicas after the syncs.
type corpus struct {
	msgs map[string]*message // by base name
}

// message is one delivered message.
type message struct {
	box, base, sha string
	flags          string // the system flags it must end up with (letters, sorted)
	gone           bool   // expunged on purpose: must be gone everywhere
}

func newCorpus() *corpus { return &corpus{msgs: map[string]*message{}} }

func (c *corpus) add(mailbox string, msg []byte, base, flags string) {
	c.msgs[base] = &message{box: mailbox, base: base, sha: hashOf(msg), flags: sortLetters(onlySystem(flags))}
}

// count is the number of messages that must be there.
func (c *corpus) count() int {
	n := 0
	for _, m := range c.msgs {
		if !m.gone {
			n++
		}
	}
	return n
}

// live returns the messages that must be there, in a stable order.
func (c *corpus) live() []*message {
	var out []*message
	for _, m := range c.msgs {
		if !m.gone {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].base < out[j].base })
	return out
}

// onlySystem keeps the system flag letters (upper case).
func onlySystem(letters string) string {
	var b []byte
	for i := 0; i < len(letters); i++ {
		if c := letters[i]; c >= 'A' && c <= 'Z' {
			b = append(b, c)
		}
	}
	return string(b)
}

func sortLetters(s string) string {
	b := []byte(s)
	sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
	return string(b)
}

// union is the sorted union of two sets of flag letters.
func union(a, b string) string {
	out := a
	for i := 0; i < len(b); i++ {
		if !strings.ContainsRune(out, rune(b[i])) {
			out += string(b[i])
		}
	}
	return sortLetters(out)
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// setFlags renames a message file to carry the given flag letters, as
// Dovecot does when a client changes flags (without the uidlist lock: a
// rename in cur/ is atomic, and tests call this while no sync runs).
func setFlags(t testing.TB, root, mailbox, base, letters string) {
	t.Helper()
	dir := boxDir(root, mailbox)
	p := findFile(dir, base)
	if p == "" {
		t.Fatalf("no message %s in %s of %s", base, mailbox, root)
	}
	l := []byte(letters)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	if err := os.Rename(p, filepath.Join(dir, "cur", base+":2,"+string(l))); err != nil {
		t.Fatal(err)
	}
}

// findFile returns the path of the message file with base in dir's cur/ or
// new/, or "".
func findFile(dir, base string) string {
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			if b, _, _ := strings.Cut(e.Name(), ":"); b == base {
				return filepath.Join(dir, sub, e.Name())
			}
		}
	}
	return ""
}

// listing is every file under root with size and mtime, for "changed
// nothing" comparisons; skip names files to leave out (the index).
func listing(t testing.TB, root string, skip func(rel string) bool) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if skip != nil && skip(rel) {
			return nil
		}
		if fi.IsDir() {
			lines = append(lines, fmt.Sprintf("%s/", rel))
			return nil
		}
		lines = append(lines, fmt.Sprintf("%s %d %d", rel, fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// notIndex skips twinbox's own files at the top of a root (its index).
func notIndex(rel string) bool {
	return !strings.Contains(rel, string(filepath.Separator)) && strings.HasPrefix(rel, "twinbox.")
}
