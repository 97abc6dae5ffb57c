package integration

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/internal/testmail"
)

// Dovecot as the judge (contract §7): scenario histories are synced by the
// real binary, then Dovecot's doveadm reads both replicas. It must see the
// same mail in both (mailboxes, GUIDs, UIDVALIDITY, UIDNEXT, UIDs, message
// GUIDs, flags, keywords, INTERNALDATEs, bodies, subscriptions) and complain
// about neither. Unless a test says otherwise the judge reads snapshots, so
// that the replicas are exactly what twinbox left.

// syncOK runs `twinbox sync A B` (or another command) and requires exit 0.
func syncOK(t *testing.T, args ...string) result {
	t.Helper()
	if len(args) == 2 {
		args = append([]string{"sync"}, args...)
	}
	return runWant(t, 0, args...)
}

// judgeBoth reads both replicas with the judge and fails unless Dovecot sees
// the same mail in both and complains about neither. It returns the views.
func judgeBoth(t *testing.T, j *dovecot.Judge, a, b string, opts ...dovecot.Option) (*dovecot.View, *dovecot.View) {
	t.Helper()
	va, err := j.Read(a, opts...)
	if err != nil {
		t.Fatalf("judge reading %s: %v", a, err)
	}
	vb, err := j.Read(b, opts...)
	if err != nil {
		t.Fatalf("judge reading %s: %v", b, err)
	}
	var bad []string
	for _, v := range []*dovecot.View{va, vb} {
		for _, p := range v.Check() {
			bad = append(bad, v.Root+": "+p)
		}
	}
	bad = append(bad, dovecot.Diff(va, vb)...)
	if len(bad) > 0 {
		t.Fatalf("Dovecot's judgement of %s and %s:\n  %s", a, b, strings.Join(bad, "\n  "))
	}
	return va, vb
}

// snapshotted judges copies of the replicas.
func snapshotted(t *testing.T, j *dovecot.Judge, a, b string) (*dovecot.View, *dovecot.View) {
	t.Helper()
	return judgeBoth(t, j, a, b, dovecot.Snapshot())
}

// settled checks a pair after its last sync: `check` says identical, both are
// clean Maildirs, the judge is happy, and one more sync does nothing.
func settled(t *testing.T, j *dovecot.Judge, a, b string) (*dovecot.View, *dovecot.View) {
	t.Helper()
	if r := run(t, "check", a, b); r.code != 0 {
		t.Fatalf("check:\n%s", r)
	}
	requireClean(t, nil, false, a, b)
	va, vb := snapshotted(t, j, a, b)
	requireIdle(t, a, b)
	return va, vb
}

func pair(t *testing.T) (string, string) {
	d := t.TempDir()
	return filepath.Join(d, "a"), filepath.Join(d, "b")
}

func uidsOf(mb *dovecot.Mailbox) []uint32 {
	var out []uint32
	for _, m := range mb.Messages {
		out = append(out, m.UID)
	}
	return out
}

func mailbox(t *testing.T, v *dovecot.View, name string) *dovecot.Mailbox {
	t.Helper()
	mb := v.Mailbox(name)
	if mb == nil {
		var names []string
		for _, m := range v.Mailboxes {
			names = append(names, m.Name)
		}
		t.Fatalf("%s: Dovecot sees no mailbox %q (only %q)", v.Root, name, names)
	}
	return mb
}

// messageByGUID finds a message by its GUID (base name for testmail's).
func messageByGUID(t *testing.T, mb *dovecot.Mailbox, guid string) *dovecot.Message {
	t.Helper()
	for i := range mb.Messages {
		if mb.Messages[i].GUID == guid {
			return &mb.Messages[i]
		}
	}
	t.Fatalf("mailbox %q: Dovecot sees no message %s", mb.Name, guid)
	return nil
}

func writeSubscriptions(t *testing.T, root string, names ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("V\t2\n\n")
	for _, n := range names {
		b.WriteString(strings.ReplaceAll(n, "/", "\t") + "\n")
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "subscriptions"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestJudgeFirstSyncIntoEmpty(t *testing.T) { dovecot.ForEach(t, testJudgeFirstSyncIntoEmpty) }

func testJudgeFirstSyncIntoEmpty(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	var inbox []string
	for i := 0; i < 5; i++ {
		inbox = append(inbox, testmail.Deliver(t, a, "INBOX", "hello"))
	}
	testmail.SetFlags(t, a, "INBOX", inbox[0], "S")
	testmail.SetFlags(t, a, "INBOX", inbox[1], "FRS")
	testmail.Deliver(t, a, "Work", "work")
	testmail.Deliver(t, a, "Work/Reports", "nested")
	testmail.Deliver(t, a, "Lists/golang", "list mail")
	writeSubscriptions(t, a, "INBOX", "Work", "Work/Reports")
	syncOK(t, a, b)
	va, _ := settled(t, j, a, b)
	if got := uidsOf(mailbox(t, va, "INBOX")); !reflect.DeepEqual(got, []uint32{1, 2, 3, 4, 5}) {
		t.Errorf("INBOX UIDs %v, want 1..5", got)
	}
	if m := messageByGUID(t, mailbox(t, va, "INBOX"), inbox[1]); !reflect.DeepEqual(m.Flags, []string{`\Answered`, `\Flagged`, `\Seen`}) {
		t.Errorf("flags %q", m.Flags)
	}
	if want := []string{"INBOX", "Work", "Work/Reports"}; !reflect.DeepEqual(va.Subscriptions, want) {
		t.Errorf("subscriptions %q, want %q", va.Subscriptions, want)
	}
	for _, n := range []string{"Work", "Work/Reports", "Lists/golang"} {
		if c := mailbox(t, va, n).Count; c != 1 {
			t.Errorf("%s: %d messages", n, c)
		}
	}
}

func TestJudgeSameNextUIDOnBothSides(t *testing.T) {
	dovecot.ForEach(t, testJudgeSameNextUIDOnBothSides)
}

func testJudgeSameNextUIDOnBothSides(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	common := testmail.Deliver(t, a, "INBOX", "common")
	syncOK(t, a, b)
	ma := testmail.Deliver(t, a, "INBOX", "only on A")
	mb := testmail.Deliver(t, b, "INBOX", "only on B")
	r := syncOK(t, "sync", "--json", a, b)
	if s := parseSummary(t, r); s.Renumbered != 2 {
		t.Errorf("renumbered %d, want 2:\n%s", s.Renumbered, r)
	}
	va, _ := settled(t, j, a, b)
	in := mailbox(t, va, "INBOX")
	lo, hi := min(ma, mb), max(ma, mb)
	var got []string
	for _, m := range in.Messages {
		got = append(got, m.GUID)
	}
	if uids := uidsOf(in); !reflect.DeepEqual(uids, []uint32{1, 3, 4}) || !reflect.DeepEqual(got, []string{common, lo, hi}) || in.UIDNext != 5 {
		t.Errorf("INBOX: UIDs %v GUIDs %v UIDNEXT %d; want 1 3 4, %v, 5", uids, got, in.UIDNext, []string{common, lo, hi})
	}
}

func TestJudgeSeenVersusFlagged(t *testing.T) { dovecot.ForEach(t, testJudgeSeenVersusFlagged) }

func testJudgeSeenVersusFlagged(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	m := testmail.Deliver(t, a, "INBOX", "x")
	other := testmail.Deliver(t, a, "INBOX", "y")
	syncOK(t, a, b)
	testmail.SetFlags(t, a, "INBOX", m, "S")
	testmail.SetFlags(t, b, "INBOX", m, "F")
	testmail.SetFlags(t, b, "INBOX", other, "D")
	syncOK(t, a, b)
	va, _ := settled(t, j, a, b)
	in := mailbox(t, va, "INBOX")
	if f := messageByGUID(t, in, m).Flags; !reflect.DeepEqual(f, []string{`\Flagged`, `\Seen`}) {
		t.Errorf("flags %q, want \\Flagged \\Seen", f)
	}
	if f := messageByGUID(t, in, other).Flags; !reflect.DeepEqual(f, []string{`\Draft`}) {
		t.Errorf("flags %q, want \\Draft", f)
	}
}

func TestJudgeKeywordsWithDifferentLetters(t *testing.T) {
	dovecot.ForEach(t, testJudgeKeywordsWithDifferentLetters)
}

func testJudgeKeywordsWithDifferentLetters(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	m := testmail.Deliver(t, a, "INBOX", "x")
	n := testmail.Deliver(t, a, "INBOX", "y")
	syncOK(t, a, b)
	// The same keywords have other letters on each side.
	testmail.WriteKeywords(t, a, "INBOX", []string{"Work", "$Label1"})
	testmail.WriteKeywords(t, b, "INBOX", []string{"Home", "Work"})
	testmail.SetFlags(t, a, "INBOX", m, "Sb") // \Seen $Label1
	testmail.SetFlags(t, b, "INBOX", n, "ab") // Home Work
	syncOK(t, a, b)
	va, _ := settled(t, j, a, b)
	in := mailbox(t, va, "INBOX")
	if f := messageByGUID(t, in, m).Flags; !reflect.DeepEqual(f, []string{"$Label1", `\Seen`}) {
		t.Errorf("%s: flags %q, want $Label1 \\Seen", m, f)
	}
	if f := messageByGUID(t, in, n).Flags; !reflect.DeepEqual(f, []string{"Home", "Work"}) {
		t.Errorf("%s: flags %q, want Home Work", n, f)
	}
}

func TestJudgeRename(t *testing.T) { dovecot.ForEach(t, testJudgeRename) }

func testJudgeRename(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	testmail.Deliver(t, a, "Old", "x")
	testmail.Deliver(t, a, "Other", "y")
	syncOK(t, a, b)
	guid := testmail.Uidlist(t, a, "Old").GUID
	testmail.Rename(t, a, "Old", "New")
	late := testmail.Deliver(t, b, "Old", "arrived on B under the old name")
	testmail.Rename(t, b, "Other", "Parent/Child")
	syncOK(t, a, b)
	va, _ := settled(t, j, a, b)
	var names []string
	for _, mb := range va.Mailboxes {
		if !mb.NoSelect {
			names = append(names, mb.Name)
		}
	}
	if want := []string{"INBOX", "New", "Parent/Child"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("mailboxes %q, want %q", names, want)
	}
	nb := mailbox(t, va, "New")
	if nb.Count != 2 || !strings.EqualFold(nb.GUID, hexGUID(guid)) {
		t.Errorf("New: %d messages, GUID %s; want 2 and the old GUID %s", nb.Count, nb.GUID, hexGUID(guid))
	}
	messageByGUID(t, nb, late)
}

func hexGUID(g [16]byte) string {
	const hexd = "0123456789abcdef"
	var b strings.Builder
	for _, c := range g {
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

func TestJudgeDeleteWithIntent(t *testing.T) { dovecot.ForEach(t, testJudgeDeleteWithIntent) }

func testJudgeDeleteWithIntent(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	testmail.Deliver(t, a, "Proj", "old 1")
	testmail.Deliver(t, a, "Proj", "old 2")
	testmail.Deliver(t, a, "Done", "finished")
	testmail.Deliver(t, a, "Gone", "lost folder")
	syncOK(t, a, b)
	testmail.DeleteWithIntent(t, a, "Proj")
	testmail.DeleteWithIntent(t, a, "Done")
	late := testmail.Deliver(t, b, "Proj", "arrived on B after the delete")
	// A folder that merely disappears (no log record) is restored.
	if err := os.RemoveAll(testmail.Dir(t, b, "Gone")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, a, b)
	va, _ := settled(t, j, a, b)
	if va.Mailbox("Done") != nil {
		t.Errorf("Done was deleted with intent but Dovecot still sees it")
	}
	p := mailbox(t, va, "Proj")
	if p.Count != 1 || p.Messages[0].GUID != late {
		t.Errorf("Proj holds %d messages; want only the late one %s", p.Count, late)
	}
	if c := mailbox(t, va, "Gone").Count; c != 1 {
		t.Errorf("Gone holds %d messages, want its 1 restored", c)
	}
}

func TestJudgeBackupIntoDifferentDestination(t *testing.T) {
	dovecot.ForEach(t, testJudgeBackupIntoDifferentDestination)
}

func testJudgeBackupIntoDifferentDestination(t *testing.T, dv *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, dv)
	d := t.TempDir()
	src, dst := filepath.Join(d, "src"), filepath.Join(d, "dst")
	m := testmail.Deliver(t, src, "INBOX", "1")
	testmail.Deliver(t, src, "INBOX", "2")
	testmail.SetFlags(t, src, "INBOX", m, "S")
	testmail.Deliver(t, src, "Work", "w")
	writeSubscriptions(t, src, "INBOX", "Work")
	// The source is an established replica (it has synced before).
	syncOK(t, src, filepath.Join(d, "scratch"))
	// The destination has mail and folders of its own, which go.
	testmail.Deliver(t, dst, "INBOX", "dst's own")
	testmail.Deliver(t, dst, "Junk", "dst's junk")
	writeSubscriptions(t, dst, "Junk")
	syncOK(t, dst, filepath.Join(d, "scratch2"))
	before := listing(t, src, notIndex)
	r := runWant(t, 0, "backup", "--json", src, dst)
	if s := parseSummary(t, r); s.Mode != "backup" {
		t.Errorf("mode %q, want backup", s.Mode)
	}
	if after := listing(t, src, notIndex); after != before {
		t.Errorf("backup changed its source:\n%s", diffLines(before, after))
	}
	if r := run(t, "check", src, dst); r.code != 0 {
		t.Fatalf("check after backup:\n%s", r)
	}
	requireClean(t, nil, false, src, dst)
	vs, _ := snapshotted(t, j, src, dst)
	if vs.Mailbox("Junk") != nil || len(mailbox(t, vs, "INBOX").Messages) != 2 {
		t.Errorf("source changed by the backup: %+v", vs.Mailboxes)
	}
	// A second backup has nothing to do.
	s := parseSummary(t, runWant(t, 0, "backup", "--json", src, dst))
	if s.AppliedA.work()+s.AppliedB.work() != 0 {
		t.Errorf("second backup did work: A=%+v B=%+v", s.AppliedA, s.AppliedB)
	}
}

// TestJudgeDovecotTouchesBetweenSyncs lets Dovecot itself work on the
// replicas between syncs: the judge reads them in place with on-disk indexes,
// as a running Dovecot would, so Dovecot assigns UIDs to new files, rewrites
// uidlists, and remembers what it saw. Every later read must find no
// inconsistency (no "Expunged message reappeared", no UIDVALIDITY change),
// and the syncs after Dovecot's changes must converge.
func TestJudgeDovecotTouchesBetweenSyncs(t *testing.T) {
	dovecot.ForEach(t, testJudgeDovecotTouchesBetweenSyncs)
}

func testJudgeDovecotTouchesBetweenSyncs(t *testing.T, d *dovecot.Install) {
	j := dovecot.NewJudgeFor(t, d)
	a, b := pair(t)
	inPlace := []dovecot.Option{dovecot.DiskIndexes()}
	var all []string
	for i := 0; i < 4; i++ {
		all = append(all, testmail.Deliver(t, a, "INBOX", "base"))
	}
	testmail.Deliver(t, a, "Work", "work")
	testmail.Deliver(t, b, "Empty/Child", "an empty parent")
	syncOK(t, a, b)
	judgeBoth(t, j, a, b, inPlace...)

	// New mail on both sides; Dovecot sees it first and gives it UIDs (the same
	// next UID on each side), then the sync renumbers.
	na := testmail.Deliver(t, a, "INBOX", "new on A")
	nb := testmail.Deliver(t, b, "INBOX", "new on B")
	testmail.SetFlags(t, b, "INBOX", all[0], "S")
	if _, err := j.Read(a, inPlace...); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Read(b, inPlace...); err != nil {
		t.Fatal(err)
	}
	if ua, ub := testmail.UIDs(t, a, "INBOX"), testmail.UIDs(t, b, "INBOX"); ua[5] != na || ub[5] != nb {
		t.Fatalf("Dovecot did not give UID 5 to the new mail: A %v, B %v", ua, ub)
	}
	syncOK(t, a, b)
	va, _ := judgeBoth(t, j, a, b, inPlace...)
	in := mailbox(t, va, "INBOX")
	if uids := uidsOf(in); !reflect.DeepEqual(uids, []uint32{1, 2, 3, 4, 6, 7}) {
		t.Errorf("INBOX UIDs after renumbering: %v, want 1-4, 6, 7", uids)
	}

	// Dovecot notices an expunge (the file removed), and a message moved
	// between folders (hardlinked, as Dovecot's MOVE does).
	p := testmail.Find(t, a, "INBOX", all[1])
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	mv := testmail.Find(t, b, "INBOX", all[2])
	if err := os.Link(mv, filepath.Join(testmail.Dir(t, b, "Work"), "cur", filepath.Base(mv))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mv); err != nil {
		t.Fatal(err)
	}
	judgeBoth0(t, j, a, b, inPlace...)
	syncOK(t, a, b)
	va, _ = judgeBoth(t, j, a, b, inPlace...)
	in = mailbox(t, va, "INBOX")
	for _, m := range in.Messages {
		if m.GUID == all[1] || m.GUID == all[2] {
			t.Errorf("INBOX still has %s", m.GUID)
		}
	}
	messageByGUID(t, mailbox(t, va, "Work"), all[2])
	if r := run(t, "check", a, b); r.code != 0 {
		t.Fatalf("check:\n%s", r)
	}
	requireCleanAfterDovecot(t, a, b)
	requireIdle(t, a, b)
	// And Dovecot, with the indexes it kept, still agrees.
	judgeBoth(t, j, a, b, inPlace...)
	if !slices.Contains(testmail.Files(t, a, "Work"), all[2]) {
		t.Errorf("the moved message is not in A's Work")
	}
}

// judgeBoth0 lets Dovecot read both replicas in place and fails only on its
// warnings (the replicas differ at this point).
func judgeBoth0(t *testing.T, j *dovecot.Judge, a, b string, opts ...dovecot.Option) {
	t.Helper()
	for _, r := range []string{a, b} {
		v, err := j.Read(r, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if c := v.Check(); len(c) > 0 {
			t.Fatalf("Dovecot on %s before the sync:\n  %s", r, strings.Join(c, "\n  "))
		}
	}
}
