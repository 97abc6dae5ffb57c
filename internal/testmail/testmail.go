// Package testmail builds and changes Maildir replicas in tests the way an
// MTA, a mail client through Dovecot, or an admin's shell would, and runs
// syncs between them in process.
package testmail

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

var seq atomic.Uint64

// layouts holds the roots registered with SetLayout.
var layouts sync.Map // root -> maildir.Layout

// SetLayout makes every helper of this package treat root as a replica of
// that layout (LAYOUT=fs); roots not registered are Maildir++.
func SetLayout(root string, l maildir.Layout) { layouts.Store(filepath.Clean(root), l) }

// Loc is root's location, with the layout registered by SetLayout.
func Loc(root string) maildir.Location {
	loc := maildir.Location{Root: root}
	if l, ok := layouts.Load(filepath.Clean(root)); ok {
		loc.Layout = l.(maildir.Layout)
	}
	return loc
}

// Dir returns a mailbox's directory under root (Maildir++).
func Dir(t testing.TB, root, mailbox string) string {
	t.Helper()
	loc := Loc(root)
	d, err := loc.MailboxDir(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Deliver writes a message into mailbox/new the way an MTA does and
// returns its base name.
func Deliver(t testing.TB, root, mailbox, body string) string {
	t.Helper()
	return DeliverAt(t, Loc(root), mailbox, body)
}

// DeliverAt is Deliver into any location (LAYOUT=fs, UTF8).
func DeliverAt(t testing.TB, loc maildir.Location, mailbox, body string) string {
	t.Helper()
	dir, err := loc.MailboxDir(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := maildir.CreateMailboxDirs(dir); err != nil {
		t.Fatal(err)
	}
	n := seq.Add(1)
	msg := fmt.Sprintf("From: a@example.org\r\nTo: b@example.org\r\nSubject: test %d\r\nMessage-ID: <%d@test>\r\n\r\n%s\r\n", n, n, body)
	base := fmt.Sprintf("%d.M%dP%d.testhost,S=%d", 1700000000+n, n, os.Getpid(), len(msg))
	tmp := filepath.Join(dir, "tmp", base)
	if err := os.WriteFile(tmp, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1700000000+int64(n), 0)
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new", base)); err != nil {
		t.Fatal(err)
	}
	return base
}

// messageID maps a mailbox's file base names to the message they hold: the
// uidlist's G field where it has one (twinbox gives a renumbered message a
// new file name and keeps its identity there), else the base itself.
func messageID(dir string) func(base string) string {
	ids := map[string]string{}
	if ul, _, err := maildir.ReadUidlist(dir); err == nil {
		for _, r := range ul.Records {
			if g, ok := r.Get('G'); ok && g != "" {
				ids[r.Base()] = g
			}
		}
	}
	return func(base string) string {
		if g, ok := ids[base]; ok {
			return g
		}
		return base
	}
}

// Find returns the path of the file of message id (the base name Deliver
// returned) in a mailbox, or "": the file of that base name if there is
// one, else the file whose uidlist record names id in its G field.
func Find(t testing.TB, root, mailbox, id string) string {
	t.Helper()
	if p := FindFile(t, root, mailbox, id); p != "" {
		return p
	}
	dir := Dir(t, root, mailbox)
	idOf := messageID(dir)
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			if idOf(strings.SplitN(e.Name(), ":", 2)[0]) == id {
				return filepath.Join(dir, sub, e.Name())
			}
		}
	}
	return ""
}

// FindFile returns the path of the file with the given base name in a
// mailbox, or "".
func FindFile(t testing.TB, root, mailbox, base string) string {
	t.Helper()
	dir := Dir(t, root, mailbox)
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			if strings.SplitN(e.Name(), ":", 2)[0] == base {
				return filepath.Join(dir, sub, e.Name())
			}
		}
	}
	return ""
}

// Files lists the messages of a mailbox, sorted: each by the base name
// Deliver returned for it (messageID), whatever its file is called now.
func Files(t testing.TB, root, mailbox string) []string {
	t.Helper()
	dir := Dir(t, root, mailbox)
	idOf := messageID(dir)
	var out []string
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			out = append(out, idOf(strings.SplitN(e.Name(), ":", 2)[0]))
		}
	}
	sort.Strings(out)
	return out
}

// SetFlags renames a message file to carry exactly the given flag letters
// (system flags and keyword letters), as Dovecot does, under its lock.
func SetFlags(t testing.TB, root, mailbox, base, letters string) {
	t.Helper()
	p := Find(t, root, mailbox, base)
	if p == "" {
		t.Fatalf("no message %s in %s", base, mailbox)
	}
	dir := Dir(t, root, mailbox)
	lk, err := maildir.LockUidlist(context.Background(), dir, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	l := []byte(letters)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	np := filepath.Join(dir, "cur", strings.SplitN(filepath.Base(p), ":", 2)[0]+":2,"+string(l))
	if err := os.Rename(p, np); err != nil {
		t.Fatal(err)
	}
}

// Expunge removes a message file.
func Expunge(t testing.TB, root, mailbox, base string) {
	t.Helper()
	p := Find(t, root, mailbox, base)
	if p == "" {
		t.Fatalf("no message %s in %s", base, mailbox)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

// Sync runs one in-process sync between two roots (a backup when backup).
func Sync(t testing.TB, a, b string, opt session.Options) *session.Summary {
	t.Helper()
	s, err := TrySync(a, b, opt)
	if err != nil {
		t.Fatalf("sync %s %s: %v", a, b, err)
	}
	return s
}

// TrySync is Sync returning the error.
func TrySync(a, b string, opt session.Options) (*session.Summary, error) {
	return TrySyncLocs(context.Background(), Loc(a), Loc(b), opt)
}

// TrySyncLocs is TrySync of two locations (a layout, an INDEX= of their
// own) under ctx.
func TrySyncLocs(ctx context.Context, la, lb maildir.Location, opt session.Options) (*session.Summary, error) {
	ra, err := index.Open(ctx, la, index.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	rb, err := index.Open(ctx, lb, index.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	defer rb.Close()
	sum, err := session.Run(ctx, ra, rb, opt)
	if err != nil {
		return sum, err
	}
	// Every sync in the tests also checks the indexes' invariants.
	if bad := append(ra.Verify(), rb.Verify()...); len(bad) > 0 && !opt.DryRun {
		return sum, fmt.Errorf("index invariants broken after the sync:\n%s", strings.Join(bad, "\n"))
	}
	return sum, nil
}

// Check returns the differences between two roots.
func Check(t testing.TB, a, b string) []string {
	t.Helper()
	ctx := context.Background()
	ra, err := index.Open(ctx, Loc(a), index.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := index.Open(ctx, Loc(b), index.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	d, err := session.Check(ctx, ra, rb, session.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Converged fails the test unless a and b are identical.
func Converged(t testing.TB, a, b string) {
	t.Helper()
	if d := Check(t, a, b); len(d) > 0 {
		t.Fatalf("replicas differ:\n%s", strings.Join(d, "\n"))
	}
}

// UIDs returns UID -> message (the G field, else the base name) of the
// messages of a mailbox as its dovecot-uidlist says: the records whose
// files are there. A record without its file is an expunged message's,
// which Dovecot (and twinbox) keep until the uidlist is rewritten: Records
// lists those too.
func UIDs(t testing.TB, root, mailbox string) map[uint32]string {
	t.Helper()
	dir := Dir(t, root, mailbox)
	have := map[string]bool{}
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			have[strings.SplitN(e.Name(), ":", 2)[0]] = true
		}
	}
	ul, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]string{}
	for _, r := range ul.Records {
		if have[r.Base()] {
			out[r.UID] = messageOf(r)
		}
	}
	return out
}

func messageOf(r maildir.UidRecord) string {
	if v, ok := r.Get('G'); ok {
		return v
	}
	return r.Base()
}

// Records returns UID -> message (the G field, else the base name) of
// every record of a mailbox's dovecot-uidlist, those without a file (an
// expunged message's record) included.
func Records(t testing.TB, root, mailbox string) map[uint32]string {
	t.Helper()
	ul, _, err := maildir.ReadUidlist(Dir(t, root, mailbox))
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]string{}
	for _, r := range ul.Records {
		out[r.UID] = messageOf(r)
	}
	return out
}

// Uidlist reads a mailbox's dovecot-uidlist.
func Uidlist(t testing.TB, root, mailbox string) *maildir.Uidlist {
	t.Helper()
	ul, _, err := maildir.ReadUidlist(Dir(t, root, mailbox))
	if err != nil {
		t.Fatal(err)
	}
	return ul
}

// Flags returns the flag part (after ":2,") of a message's file name.
func Flags(t testing.TB, root, mailbox, base string) string {
	t.Helper()
	p := Find(t, root, mailbox, base)
	if p == "" {
		t.Fatalf("no message %s in %s of %s", base, mailbox, root)
	}
	name := filepath.Base(p)
	if i := strings.Index(name, ":2,"); i >= 0 {
		return name[i+3:]
	}
	return ""
}

// Keywords returns a mailbox's dovecot-keywords list.
func Keywords(t testing.TB, root, mailbox string) []string {
	t.Helper()
	kw, _, err := maildir.ReadKeywords(Dir(t, root, mailbox))
	if err != nil {
		t.Fatal(err)
	}
	return kw
}

// WriteKeywords replaces a mailbox's dovecot-keywords list.
func WriteKeywords(t testing.TB, root, mailbox string, kw []string) {
	t.Helper()
	if err := maildir.WriteKeywords(Dir(t, root, mailbox), kw); err != nil {
		t.Fatal(err)
	}
}

// DeleteWithIntent removes a folder the way Dovecot's DELETE does: the
// directory goes and dovecot.mailbox.log records the mailbox GUID.
func DeleteWithIntent(t testing.TB, root, mailbox string) {
	t.Helper()
	DeleteWithIntentAt(t, root, mailbox, time.Now())
}

// DeleteWithIntentAt is DeleteWithIntent with the log record's time (the
// log has whole seconds).
func DeleteWithIntentAt(t testing.TB, root, mailbox string, when time.Time) {
	t.Helper()
	dir := Dir(t, root, mailbox)
	ul := Uidlist(t, root, mailbox)
	// Under LAYOUT=fs child folders stay, as with Dovecot's DELETE.
	if err := Loc(root).RemoveMailboxDir(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := maildir.AppendMailboxLog(root, []maildir.LogRecord{{Type: 1, GUID: ul.GUID, Time: when}}); err != nil {
		t.Fatal(err)
	}
}

// Rename moves a folder's directory (a plain mv; Dovecot's RENAME is the
// same on disk plus a log record).
func Rename(t testing.TB, root, from, to string) {
	t.Helper()
	if err := os.Rename(Dir(t, root, from), Dir(t, root, to)); err != nil {
		t.Fatal(err)
	}
}

// Mailboxes lists the mailbox names under root.
func Mailboxes(t testing.TB, root string) []string {
	t.Helper()
	ds, err := Loc(root).ListMailboxes()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}

// Snapshot lists every file under root with its size and mtime, the index
// excluded: two equal snapshots mean no file was written.
func Snapshot(root string) string {
	var sb strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || strings.HasPrefix(fi.Name(), "twinbox.") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&sb, "%s %d %d\n", rel, fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	return sb.String()
}

// Roots returns the paths of two replicas, a and b, in a fresh temporary
// directory (neither exists yet).
func Roots(t testing.TB) (string, string) {
	d := t.TempDir()
	return filepath.Join(d, "a"), filepath.Join(d, "b")
}

// SyncClean runs one sync and fails the test if it reports changes made
// during it (exit 2).
func SyncClean(t testing.TB, a, b string) *session.Summary {
	t.Helper()
	s := Sync(t, a, b, session.Options{})
	if s.Changed {
		t.Fatalf("sync reported changes during sync: %v %v", s.ResultA.Skipped, s.ResultB.Skipped)
	}
	return s
}

// SyncUntilQuiet syncs a and b with opt until a sync reports no change
// made during it (exit 2), at most max times; it fails the test on an error
// or when the last sync still reported changes.
func SyncUntilQuiet(t testing.TB, a, b string, opt session.Options, max int) {
	t.Helper()
	for i := 1; ; i++ {
		s, err := TrySync(a, b, opt)
		if err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		if !s.Changed {
			return
		}
		if i == max {
			t.Fatalf("still changing after %d syncs: %v %v", max, s.ResultA.Skipped, s.ResultB.Skipped)
		}
	}
}

// Settle syncs once, requires the replicas identical, then checks that
// another sync does nothing (AssertIdle).
func Settle(t testing.TB, a, b string) {
	t.Helper()
	SyncClean(t, a, b)
	Converged(t, a, b)
	AssertIdle(t, a, b)
}

// AssertIdle checks that a sync of converged replicas does nothing and
// changes no file.
func AssertIdle(t testing.TB, a, b string) {
	t.Helper()
	before := Snapshot(a) + Snapshot(b)
	s := SyncClean(t, a, b)
	if n := s.ResultA.Added + s.ResultB.Added + s.ResultA.Flagged + s.ResultB.Flagged + s.ResultA.Expunged + s.ResultB.Expunged + s.ResultA.Moved + s.ResultB.Moved + s.ResultA.MailboxOps + s.ResultB.MailboxOps; n != 0 {
		t.Fatalf("idle sync did %d things: A=%+v B=%+v", n, s.ResultA, s.ResultB)
	}
	if after := Snapshot(a) + Snapshot(b); after != before {
		t.Fatalf("idle sync changed files:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// Roots3 returns the paths of three replicas, a, b and c, in a fresh
// temporary directory (none exists yet).
func Roots3(t testing.TB) (string, string, string) {
	d := t.TempDir()
	return filepath.Join(d, "a"), filepath.Join(d, "b"), filepath.Join(d, "c")
}

// WantMailboxes fails the test unless each root holds exactly the mailboxes
// want, in Mailboxes' order.
func WantMailboxes(t testing.TB, want []string, roots ...string) {
	t.Helper()
	for _, r := range roots {
		if got := Mailboxes(t, r); !slices.Equal(got, want) {
			t.Fatalf("%s: mailboxes %v, want %v", r, got, want)
		}
	}
}

// MakeMailbox makes mailbox name under root with an empty dovecot-uidlist
// under a new GUID and the given UIDVALIDITY (a Dovecot CREATE whose
// counter handed out that value), and returns its directory.
func MakeMailbox(t testing.TB, root, name string, uidvalidity uint32) string {
	t.Helper()
	dir := Dir(t, root, name)
	if err := maildir.CreateMailboxDirs(dir); err != nil {
		t.Fatal(err)
	}
	if err := maildir.WriteUidlist(dir, &maildir.Uidlist{Version: 3, UIDValidity: uidvalidity, NextUID: 1, GUID: maildir.NewGUID()}); err != nil {
		t.Fatal(err)
	}
	return dir
}
