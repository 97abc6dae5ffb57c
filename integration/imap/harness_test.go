package imap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// side is one replica: a Dovecot server and the Maildir++ root it serves.
type side struct {
	name string
	srv  *dovecot.Server
}

func (s *side) root() string { return s.srv.Root }

// pair is two Dovecot servers whose roots twinbox syncs.
type pair struct {
	a, b  *side
	syncs int // runs of `twinbox sync`
	// syncArgs are extra flags for every sync, syncEnv extra environment.
	syncArgs, syncEnv []string
	// trace, if set, collects every sync's stderr.
	trace *bytes.Buffer
}

// newPair starts two Dovecot servers with the given options (Name is set
// here) and returns them. It skips the test without Dovecot or root.
func newPair(t *testing.T, o dovecot.ServerOptions) *pair {
	t.Helper()
	oa, ob := o, o
	oa.Name, ob.Name = "a", "b"
	return &pair{a: &side{name: "A", srv: dovecot.StartServer(t, oa)}, b: &side{name: "B", srv: dovecot.StartServer(t, ob)}}
}

func (p *pair) sides() []*side { return []*side{p.a, p.b} }

// other returns the side that is not s.
func (p *pair) other(s *side) *side {
	if s == p.a {
		return p.b
	}
	return p.a
}

// sync runs `twinbox sync --json A B` once.
func (p *pair) sync(t testing.TB, extra ...string) result {
	t.Helper()
	p.syncs++
	args := append([]string{"sync", "--json"}, p.syncArgs...)
	args = append(args, extra...)
	args = append(args, p.a.root(), p.b.root())
	r := run(t, p.syncEnv, args...)
	if p.trace != nil {
		fmt.Fprintf(p.trace, "=== sync %d after the clients (exit %d, ended %s)\n%s", p.syncs, r.code, time.Now().Format("15:04:05.000"), r.stderr)
	}
	return r
}

// settle syncs until a sync exits 0 (at most 8 runs; exit 2 means "run
// again", anything else fails the test), then checks that one more sync is
// idle: exit 0 and nothing applied on either side.
func (p *pair) settle(t testing.TB) {
	t.Helper()
	for i := 0; ; i++ {
		r := p.sync(t)
		if r.code == 0 {
			break
		}
		if r.code != 2 || i >= 7 {
			t.Fatalf("sync %d did not converge:\n%s", i+1, r)
		}
	}
	r := p.sync(t)
	if r.code != 0 {
		t.Fatalf("idle sync after a clean one:\n%s", r)
	}
	s := parseSummary(t, r)
	if s.AppliedA.work()+s.AppliedB.work() != 0 {
		t.Fatalf("idle sync did work:\n%s", r)
	}
}

// dial logs in to a side's IMAP server; the connection is closed when the
// test ends.
func dial(t testing.TB, s *side) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(s.srv.Addr, nil)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", s.name, s.srv.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(s.srv.User, s.srv.Password).Wait(); err != nil {
		t.Fatalf("%s: login: %v", s.name, err)
	}
	return c
}

// msg is a message as IMAP shows it.
type msg struct {
	Hash     string   // sha256 of the body, hex
	Flags    []string // system flags, sorted, without \Recent
	Keywords []string // sorted
}

func (m msg) String() string {
	return fmt.Sprintf("%s flags=%v kw=%v", m.Hash[:12], m.Flags, m.Keywords)
}

// box is a mailbox as IMAP shows it.
type box struct {
	Name        string
	UIDValidity uint32
	Msgs        map[uint32]msg
}

// find returns the UIDs of the messages with the body hash h.
func (b *box) find(h string) []uint32 {
	var out []uint32
	for u, m := range b.Msgs {
		if m.Hash == h {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// view is everything an IMAP client sees of one side.
type view struct {
	Boxes map[string]*box
	Subs  []string // LIST (SUBSCRIBED), sorted
}

// hashes returns every body hash in the view with its mailboxes.
func (v *view) hashes() map[string][]string {
	out := map[string][]string{}
	for name, b := range v.Boxes {
		for _, m := range b.Msgs {
			out[m.Hash] = append(out[m.Hash], name)
		}
	}
	return out
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readView reads a side's whole view over a new IMAP connection.
func readView(t testing.TB, s *side) *view {
	t.Helper()
	v, err := readViewErr(s)
	if err != nil {
		t.Fatalf("%s: reading the IMAP view: %v", s.name, err)
	}
	return v
}

func readViewErr(s *side) (*view, error) {
	c, err := imapclient.DialInsecure(s.srv.Addr, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Login(s.srv.User, s.srv.Password).Wait(); err != nil {
		return nil, err
	}
	defer func() { _ = c.Logout().Wait() }()
	v := &view{Boxes: map[string]*box{}}
	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		return nil, fmt.Errorf("LIST: %w", err)
	}
	parent := map[string]bool{}
	for _, l := range list {
		if hasAttr(l.Attrs, imap.MailboxAttrNoSelect) || hasAttr(l.Attrs, imap.MailboxAttrNonExistent) {
			continue
		}
		v.Boxes[l.Mailbox] = &box{Name: l.Mailbox, Msgs: map[uint32]msg{}}
		parent[l.Mailbox] = hasAttr(l.Attrs, imap.MailboxAttrHasChildren)
	}
	subs, err := c.List("", "*", &imap.ListOptions{SelectSubscribed: true}).Collect()
	if err != nil {
		return nil, fmt.Errorf("LIST (SUBSCRIBED): %w", err)
	}
	for _, l := range subs {
		v.Subs = append(v.Subs, l.Mailbox)
	}
	sort.Strings(v.Subs)
	for name, b := range v.Boxes {
		sel, err := c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
		for i := 0; i < 3 && err != nil && strings.Contains(err.Error(), "Mailbox was deleted under us"); i++ {
			// The folder's directory was replaced (a sync replicating a
			// RENAME, DELETE or CREATE) since this Dovecot last looked:
			// its first EXAMINE answers so, the next one sees the folder.
			sel, err = c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
		}
		var ie *imap.Error
		if err != nil && parent[name] && errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo && strings.Contains(ie.Text, "doesn't exist") {
			// A deleted parent Dovecot still lists (its own state after
			// its own DELETE: TestDovecotAloneDeletedParentListed).
			delete(v.Boxes, name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("EXAMINE %q: %w", name, err)
		}
		b.UIDValidity = sel.UIDValidity
		if sel.NumMessages == 0 {
			continue
		}
		body := &imap.FetchItemBodySection{Peek: true}
		msgs, err := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{body}}).Collect()
		if err != nil {
			return nil, fmt.Errorf("UID FETCH in %q: %w", name, err)
		}
		for _, m := range msgs {
			var fm msg
			fm.Hash = hashOf(m.FindBodySection(body))
			for _, f := range m.Flags {
				switch {
				case strings.EqualFold(string(f), `\Recent`):
				case strings.HasPrefix(string(f), `\`):
					fm.Flags = append(fm.Flags, string(f))
				default:
					fm.Keywords = append(fm.Keywords, string(f))
				}
			}
			sort.Strings(fm.Flags)
			sort.Strings(fm.Keywords)
			b.Msgs[uint32(m.UID)] = fm
		}
	}
	return v, nil
}

func hasAttr(attrs []imap.MailboxAttr, a imap.MailboxAttr) bool {
	for _, x := range attrs {
		if strings.EqualFold(string(x), string(a)) {
			return true
		}
	}
	return false
}

// diffViews lists the differences between two views.
func diffViews(a, b *view) []string {
	var out []string
	if fmt.Sprint(a.Subs) != fmt.Sprint(b.Subs) {
		out = append(out, fmt.Sprintf("subscriptions: A %v, B %v", a.Subs, b.Subs))
	}
	names := map[string]bool{}
	for n := range a.Boxes {
		names[n] = true
	}
	for n := range b.Boxes {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		ba, bb := a.Boxes[n], b.Boxes[n]
		switch {
		case ba == nil:
			out = append(out, fmt.Sprintf("mailbox %q only on B", n))
			continue
		case bb == nil:
			out = append(out, fmt.Sprintf("mailbox %q only on A", n))
			continue
		}
		if ba.UIDValidity != bb.UIDValidity {
			out = append(out, fmt.Sprintf("mailbox %q: UIDVALIDITY A %d, B %d", n, ba.UIDValidity, bb.UIDValidity))
		}
		uids := map[uint32]bool{}
		for u := range ba.Msgs {
			uids[u] = true
		}
		for u := range bb.Msgs {
			uids[u] = true
		}
		us := make([]uint32, 0, len(uids))
		for u := range uids {
			us = append(us, u)
		}
		sort.Slice(us, func(i, j int) bool { return us[i] < us[j] })
		for _, u := range us {
			ma, oka := ba.Msgs[u]
			mb, okb := bb.Msgs[u]
			switch {
			case !oka:
				out = append(out, fmt.Sprintf("mailbox %q UID %d only on B: %s", n, u, mb))
			case !okb:
				out = append(out, fmt.Sprintf("mailbox %q UID %d only on A: %s", n, u, ma))
			case ma.String() != mb.String() || ma.Hash != mb.Hash:
				out = append(out, fmt.Sprintf("mailbox %q UID %d: A %s, B %s", n, u, ma, mb))
			}
		}
	}
	return out
}

// requireSame reads both views and fails the test unless they are identical.
func (p *pair) requireSame(t testing.TB) (*view, *view) {
	t.Helper()
	va, vb := readView(t, p.a), readView(t, p.b)
	if d := diffViews(va, vb); len(d) > 0 {
		t.Fatalf("IMAP views of A and B differ after the sync:\n  %s", strings.Join(d, "\n  "))
	}
	return va, vb
}

// checkUIDMeaning fails the test if a UID that before showed one body shows
// another after, in a mailbox of the same name and UIDVALIDITY.
func checkUIDMeaning(t testing.TB, who string, before, after *view) {
	t.Helper()
	for name, bb := range before.Boxes {
		ab := after.Boxes[name]
		if ab == nil || ab.UIDValidity != bb.UIDValidity {
			continue
		}
		for u, m := range bb.Msgs {
			if am, ok := ab.Msgs[u]; ok && am.Hash != m.Hash {
				t.Errorf("%s: mailbox %q UID %d (UIDVALIDITY %d) changed its meaning: body %s before, %s after",
					who, name, u, bb.UIDValidity, m.Hash[:12], am.Hash[:12])
			}
		}
	}
}

// checkUIDValidityKept fails the test if a mailbox both views show changed
// its UIDVALIDITY.
func checkUIDValidityKept(t testing.TB, who string, before, after *view, fresh string) {
	t.Helper()
	for name, bb := range before.Boxes {
		ab := after.Boxes[name]
		switch {
		case ab == nil:
		case name == fresh && ab.UIDValidity <= bb.UIDValidity:
			t.Errorf("%s: mailbox %q kept UIDVALIDITY %d (now %d): want a new, higher one", who, name, bb.UIDValidity, ab.UIDValidity)
		case name != fresh && ab.UIDValidity != bb.UIDValidity:
			t.Errorf("%s: mailbox %q changed UIDVALIDITY %d -> %d", who, name, bb.UIDValidity, ab.UIDValidity)
		}
	}
	if fresh != "" && (before.Boxes[fresh] == nil || after.Boxes[fresh] == nil) {
		t.Errorf("%s: mailbox %q not there before and after", who, fresh)
	}
}

// logProblems returns the lines of a Dovecot log that say twinbox and
// Dovecot fought: the patterns of issue 3 and the doveadm judge
// (dovecot.BadLogPatterns: "Fixed a duplicate", "Expunged message
// reappeared", "dotlock", "overridden", "lost", "Broken", "Corrupted",
// "Duplicate file entry", ...), every Error, Fatal or Panic, and every
// Warning of a mail process (the master's "Killed with signal 15" when
// the harness stops it is not one).
func logProblems(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		switch {
		case dovecot.MatchBadPattern(l) != "",
			strings.Contains(l, ": Error: "), strings.Contains(l, ": Fatal: "), strings.Contains(l, ": Panic: "),
			strings.Contains(l, ": Warning: ") && !strings.Contains(l, " master: "):
			out = append(out, l)
		}
	}
	return out
}

// checkLogs fails the test on any line of logProblems in either Dovecot log.
func (p *pair) checkLogs(t testing.TB) { p.checkLogsRevalidated(t, nil) }

// checkLogsRevalidated is checkLogs, but forgives Dovecot's notice that a
// folder in fresh (directory names, ".Gone-A") changed its UIDVALIDITY:
// the syncs gave it a new one on purpose.
func (p *pair) checkLogsRevalidated(t testing.TB, fresh map[string]bool) {
	t.Helper()
	for _, s := range p.sides() {
		var bad []string
		for _, l := range logProblems(s.srv.Log()) {
			if !mergedFolderLine(s.root(), l, fresh) {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			t.Errorf("Dovecot %s logged:\n  %s", s.name, strings.Join(bad, "\n  "))
		}
	}
}

// body makes a unique message.
func body(subject string) []byte {
	return []byte(fmt.Sprintf("From: test@example.org\r\nTo: bob@example.org\r\nSubject: %s\r\nMessage-ID: <%s@twinbox.test>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n\r\nBody of %s.\r\n", subject, strings.ReplaceAll(subject, " ", "."), subject))
}

// appendMsg APPENDs a message to mailbox and returns its body hash.
func appendMsg(t testing.TB, c *imapclient.Client, mailbox string, b []byte, flags ...imap.Flag) string {
	t.Helper()
	if err := appendErr(c, mailbox, b, flags...); err != nil {
		t.Fatalf("APPEND to %q: %v", mailbox, err)
	}
	return hashOf(b)
}

func appendErr(c *imapclient.Client, mailbox string, b []byte, flags ...imap.Flag) error {
	cmd := c.Append(mailbox, int64(len(b)), &imap.AppendOptions{Flags: flags, Time: time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)})
	if _, err := cmd.Write(b); err != nil {
		return err
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	_, err := cmd.Wait()
	return err
}

// deliverMTA writes a message into root/<dir>/new as an MTA would: tmp/,
// then a rename into new/, owned by the mail user. It returns the body hash.
func deliverMTA(t testing.TB, s *side, dir string, b []byte, seq int) string {
	t.Helper()
	mdir := filepath.Join(s.root(), dir)
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(mdir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.srv.Own(mdir); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%d.M%dP%d_%d.mta.test,S=%d", time.Now().Unix(), time.Now().Nanosecond()/1000, os.Getpid(), seq, len(b))
	tmp := filepath.Join(mdir, "tmp", name)
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, s.srv.UID(), s.srv.GID()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(mdir, "new", name)); err != nil {
		t.Fatal(err)
	}
	return hashOf(b)
}

// selectBox selects mailbox read-write and fails the test on error.
func selectBox(t testing.TB, c *imapclient.Client, mailbox string) *imap.SelectData {
	t.Helper()
	d, err := c.Select(mailbox, nil).Wait()
	if err != nil {
		t.Fatalf("SELECT %q: %v", mailbox, err)
	}
	return d
}

// uidOf finds the UID of the message with body hash h in the selected view
// box; it fails the test if there is not exactly one.
func uidOf(t testing.TB, v *view, mailbox, h string) uint32 {
	t.Helper()
	b := v.Boxes[mailbox]
	if b == nil {
		t.Fatalf("no mailbox %q", mailbox)
	}
	us := b.find(h)
	if len(us) != 1 {
		t.Fatalf("mailbox %q: want one message %s, have UIDs %v", mailbox, h[:12], us)
	}
	return us[0]
}
