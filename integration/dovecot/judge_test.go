package dovecot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A hand-made Maildir++ root: INBOX with three messages (one in new/), a folder "Sub",
// an empty folder with a modified-UTF-7 name, keywords, subscriptions.

const (
	inboxGUID = "00112233445566778899aabbccddeeff"
	subGUID   = "ffeeddccbbaa99887766554433221100"
	uebGUID   = "0123456789abcdef0123456789abcdef"
	m1GUID    = "a1a1a1a1b2b2b2b2c3c3c3c3d4d4d4d4"
)

var (
	m1Body = []byte("From: alice@example.org\r\nSubject: one\r\n\r\nCRLF body\r\n")
	// Tab, form feed + newline (the pager formatter's record separator), a non-UTF-8
	// byte, no final newline.
	m2Body = []byte("From: bob@example.org\nSubject: two\n\nbinary\t\xff\xfe\n\f\nlast line")
	m3Body = []byte("Subject: three, still in new/\n\nends with a form feed\n\f\n")
	s1Body = []byte("Subject: in Sub\n\nhello\n")

	m1Base = fmt.Sprintf("1700000000.M1P100.test,S=%d", len(m1Body))
	m2Base = fmt.Sprintf("1700000001.M2P100.test,S=%d", len(m2Body))
	m3Base = "1700000002.M3P100.test"
	s1Base = fmt.Sprintf("1700000010.M4P100.test,S=%d", len(s1Body))
)

func mkMaildir(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path string, data []byte, mtime int64) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if mtime != 0 {
		tm := time.Unix(mtime, 0)
		if err := os.Chtimes(path, tm, tm); err != nil {
			t.Fatal(err)
		}
	}
}

// writeMaildir writes the hand-made root.
func writeMaildir(t *testing.T, root string) {
	t.Helper()
	mkMaildir(t, root)
	mkMaildir(t, filepath.Join(root, ".Sub"))
	mkMaildir(t, filepath.Join(root, ".&ANw-bersicht")) // "Übersicht"

	writeFile(t, filepath.Join(root, "cur", m1Base+":2,S"), m1Body, 1700000000)
	writeFile(t, filepath.Join(root, "cur", m2Base+":2,FRab"), m2Body, 1700000100)
	writeFile(t, filepath.Join(root, "new", m3Base), m3Body, 1700000200)
	// The uidlist's file names may carry stale flags: Dovecot goes by the base name.
	writeFile(t, filepath.Join(root, "dovecot-uidlist"), []byte(
		"3 V1700000001 N20 G"+inboxGUID+"\n"+
			"3 G"+m1GUID+" :"+m1Base+":2,\n"+
			"5 :"+m2Base+":2,FRab\n"+
			"8 :"+m3Base+"\n"), 0)
	writeFile(t, filepath.Join(root, "dovecot-keywords"), []byte("0 $Label1\n1 Work\n"), 0)
	writeFile(t, filepath.Join(root, "subscriptions"), []byte("V\t2\n\nINBOX\nSub\n"), 0)

	writeFile(t, filepath.Join(root, ".Sub", "cur", s1Base+":2,DT"), s1Body, 1700000300)
	writeFile(t, filepath.Join(root, ".Sub", "dovecot-uidlist"), []byte(
		"3 V1700000002 N3 G"+subGUID+"\n"+
			"2 :"+s1Base+":2,DT\n"), 0)
	writeFile(t, filepath.Join(root, ".&ANw-bersicht", "dovecot-uidlist"), []byte(
		"3 V1700000003 N1 G"+uebGUID+"\n"), 0)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func expectedMailboxes() []Mailbox {
	return []Mailbox{
		{Name: "INBOX", GUID: inboxGUID, UIDValidity: 1700000001, UIDNext: 20, Count: 3,
			Messages: []Message{
				{UID: 3, GUID: m1GUID, Flags: []string{`\Seen`}, Received: 1700000000,
					Size: int64(len(m1Body)), BodySHA256: sha(m1Body)},
				{UID: 5, GUID: m2Base, Flags: []string{"$Label1", "Work", `\Answered`, `\Flagged`},
					Received: 1700000100, Size: int64(len(m2Body)), BodySHA256: sha(m2Body)},
				{UID: 8, GUID: m3Base, Received: 1700000200, Size: int64(len(m3Body)),
					BodySHA256: sha(m3Body)},
			}},
		{Name: "Sub", GUID: subGUID, UIDValidity: 1700000002, UIDNext: 3, Count: 1,
			Messages: []Message{
				{UID: 2, GUID: s1Base, Flags: []string{`\Deleted`, `\Draft`}, Received: 1700000300,
					Size: int64(len(s1Body)), BodySHA256: sha(s1Body)},
			}},
		{Name: "Übersicht", GUID: uebGUID, UIDValidity: 1700000003, UIDNext: 1},
	}
}

// treeState describes every file under root (path, size, content hash) and every
// directory, leaving out Dovecot's index files. mtimes holds the files' mtimes.
func treeState(t *testing.T, root string) (state, mtimes map[string]string) {
	t.Helper()
	state, mtimes = map[string]string{}, map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), "dovecot.index") || strings.HasPrefix(d.Name(), "dovecot.list.index") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			state[rel+"/"] = "dir"
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		state[rel] = fmt.Sprintf("size=%d sha=%s", info.Size(), sha(data)[:12])
		mtimes[rel] = info.ModTime().UTC().Format(time.RFC3339Nano)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return state, mtimes
}

func stateChanges(before, after map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(before) {
		if a, ok := after[k]; !ok {
			out = append(out, "removed "+k)
		} else if a != before[k] {
			out = append(out, fmt.Sprintf("changed %s: %s -> %s", k, before[k], a))
		}
	}
	for _, k := range sortedKeys(after) {
		if _, ok := before[k]; !ok {
			out = append(out, "added "+k)
		}
	}
	return out
}

func mustRead(t *testing.T, j *Judge, root string, opts ...Option) *View {
	t.Helper()
	v, err := j.Read(root, opts...)
	if err != nil {
		t.Fatalf("Read(%s): %v", root, err)
	}
	return v
}

func TestJudgeReadsHandMadeMaildir(t *testing.T) { ForEach(t, testJudgeReadsHandMadeMaildir) }

func testJudgeReadsHandMadeMaildir(t *testing.T, d *Install) {
	j := NewJudgeFor(t, d)
	t.Logf("Dovecot %s, doveadm runs as %s", j.Version(), j.User())
	root := filepath.Join(t.TempDir(), "replica-a")
	writeMaildir(t, root)
	before, beforeM := treeState(t, root)

	v := mustRead(t, j, root)
	if p := v.Check(); len(p) > 0 {
		t.Errorf("Check:\n%s", strings.Join(p, "\n"))
	}
	if want := expectedMailboxes(); !reflect.DeepEqual(v.Mailboxes, want) {
		t.Errorf("mailboxes:\n got %+v\nwant %+v", v.Mailboxes, want)
	}
	if want := []string{"INBOX", "Sub"}; !reflect.DeepEqual(v.Subscriptions, want) {
		t.Errorf("subscriptions: got %q, want %q", v.Subscriptions, want)
	}
	// Reading a well-formed root with in-memory indexes changes no file's content and
	// adds or removes none: uidlists keep their content, new/ is not moved to cur/.
	after, afterM := treeState(t, root)
	if ch := stateChanges(before, after); len(ch) > 0 {
		t.Errorf("doveadm changed the root while reading:\n%s", strings.Join(ch, "\n"))
	}
	// But it rewrites the uidlist of the empty mailbox (same content, new mtime), and
	// only that one.
	want := []string{"changed .&ANw-bersicht/dovecot-uidlist"}
	var got []string
	for _, ch := range stateChanges(beforeM, afterM) {
		got = append(got, ch[:strings.Index(ch, ":")])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mtime changes: got %q, want %q", got, want)
	}
	// A second read sees the same.
	if d := Diff(v, mustRead(t, j, root)); len(d) > 0 {
		t.Errorf("second read differs:\n%s", strings.Join(d, "\n"))
	}
}

func TestJudgeDiffOfCopy(t *testing.T) { ForEach(t, testJudgeDiffOfCopy) }

func testJudgeDiffOfCopy(t *testing.T, d *Install) {
	j := NewJudgeFor(t, d)
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	writeMaildir(t, a)
	if err := CopyTree(a, b); err != nil {
		t.Fatal(err)
	}
	va := mustRead(t, j, a)
	vb := mustRead(t, j, b)
	for _, v := range []*View{va, vb} {
		if p := v.Check(); len(p) > 0 {
			t.Errorf("Check %s:\n%s", v.Root, strings.Join(p, "\n"))
		}
	}
	if d := Diff(va, vb); len(d) > 0 {
		t.Fatalf("copy differs:\n%s", strings.Join(d, "\n"))
	}

	// Set \Flagged on UID 3 in the copy, the way a client would: rename within cur/.
	old := filepath.Join(b, "cur", m1Base+":2,S")
	if err := os.Rename(old, filepath.Join(b, "cur", m1Base+":2,FS")); err != nil {
		t.Fatal(err)
	}
	vb = mustRead(t, j, b)
	want := []string{`mailbox "INBOX" uid 3: flags a=[\Seen] b=[\Flagged \Seen]`}
	if d := Diff(va, vb); !reflect.DeepEqual(d, want) {
		t.Errorf("Diff after flag change:\n got %q\nwant %q", d, want)
	}
	if p := vb.Check(); len(p) > 0 {
		t.Errorf("Check after flag change:\n%s", strings.Join(p, "\n"))
	}

	// A keyword change by letter.
	if err := os.Rename(filepath.Join(b, "cur", m2Base+":2,FRab"), filepath.Join(b, "cur", m2Base+":2,FRa")); err != nil {
		t.Fatal(err)
	}
	vb = mustRead(t, j, b)
	want = append(want, `mailbox "INBOX" uid 5: keywords a=[$Label1 Work] b=[$Label1]`)
	if d := Diff(va, vb); !reflect.DeepEqual(d, want) {
		t.Errorf("Diff after keyword change:\n got %q\nwant %q", d, want)
	}
}

func TestJudgeCatchesDuplicateBaseName(t *testing.T) { ForEach(t, testJudgeCatchesDuplicateBaseName) }

func testJudgeCatchesDuplicateBaseName(t *testing.T, d *Install) {
	j := NewJudgeFor(t, d)
	root := filepath.Join(t.TempDir(), "dup")
	writeMaildir(t, root)
	// A second file with UID 3's base name (different flags): "two files with one base name".
	writeFile(t, filepath.Join(root, "cur", m1Base+":2,RS"), m1Body, 1700000000)
	before, beforeM := treeState(t, root)

	// Snapshot: Dovecot complains, the replica stays as it was.
	v := mustRead(t, j, root, Snapshot())
	checkHas(t, v, "Fixed a duplicate")
	after, afterM := treeState(t, root)
	if ch := append(stateChanges(before, after), stateChanges(beforeM, afterM)...); len(ch) > 0 {
		t.Errorf("Snapshot read changed the root:\n%s", strings.Join(ch, "\n"))
	}

	// In place: the same complaint, and Dovecot repairs the root by renaming.
	v = mustRead(t, j, root)
	checkHas(t, v, "Fixed a duplicate")
	after, _ = treeState(t, root)
	t.Logf("doveadm's repair of the duplicate, in place:\n%s", strings.Join(stateChanges(before, after), "\n"))
}

func checkHas(t *testing.T, v *View, pattern string) {
	t.Helper()
	p := v.Check()
	for _, line := range p {
		if strings.Contains(line, "["+pattern+"]") {
			t.Logf("caught: %s", line)
			return
		}
	}
	t.Errorf("Check did not report %q; got:\n%s", pattern, strings.Join(p, "\n"))
}

func TestJudgeLayoutsAndNames(t *testing.T) { ForEach(t, testJudgeLayoutsAndNames) }

func testJudgeLayoutsAndNames(t *testing.T, d *Install) {
	j := NewJudgeFor(t, d)
	tmp := t.TempDir()

	// Maildir++ with modified UTF-7 names.
	pp := filepath.Join(tmp, "pp")
	mkMaildir(t, pp)
	mkMaildir(t, filepath.Join(pp, ".&ANw-bersicht"))
	mkMaildir(t, filepath.Join(pp, ".a.b"))
	// LAYOUT=fs with UTF-8 names.
	fsr := filepath.Join(tmp, "fs")
	mkMaildir(t, fsr)
	mkMaildir(t, filepath.Join(fsr, "Übersicht"))
	mkMaildir(t, filepath.Join(fsr, "a", "b"))

	names := func(v *View) []string {
		var out []string
		for _, mb := range v.Mailboxes {
			out = append(out, fmt.Sprintf("%s noselect=%v", mb.Name, mb.NoSelect))
		}
		return out
	}
	vp := mustRead(t, j, pp)
	vf := mustRead(t, j, fsr, LayoutFS(), UTF8())
	for _, v := range []*View{vp, vf} {
		if p := v.Check(); len(p) > 0 {
			t.Errorf("Check %s:\n%s", v.Root, strings.Join(p, "\n"))
		}
	}
	want := []string{"INBOX noselect=false", "a noselect=true", "a/b noselect=false", "Übersicht noselect=false"}
	if got := names(vp); !reflect.DeepEqual(got, want) {
		t.Errorf("Maildir++ names: got %q, want %q", got, want)
	}
	if got := names(vf); !reflect.DeepEqual(got, want) {
		t.Errorf("LAYOUT=fs:UTF8 names: got %q, want %q", got, want)
	}
}

// Tests of the parsing and comparing logic that need no Dovecot.

func TestParsePagerFetch(t *testing.T) {
	body1 := "Subject: x\n\n\f\nmailbox: fake\n"
	body2 := ""
	out := "mailbox: INBOX\nmailbox-guid: " + inboxGUID + "\nuid: 1\nguid: g1\nflags: \\Seen \\Recent kw\n" +
		"date.received.unixtime: 17\nsize.physical: " + fmt.Sprint(len(body1)) + "\ntext:\n" + body1 +
		"\f\nmailbox: a/b\nmailbox-guid: " + subGUID + "\nuid: 2\nguid: g2\nflags: \n" +
		"date.received.unixtime: 18\nsize.physical: 0\ntext:\n" + body2
	recs, err := parsePagerFetch([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []fetched{
		{"INBOX", inboxGUID, Message{UID: 1, GUID: "g1", Flags: []string{`\Seen`, "kw"}, Received: 17, Size: int64(len(body1)), BodySHA256: sha([]byte(body1))}},
		{"a/b", subGUID, Message{UID: 2, GUID: "g2", Received: 18, Size: 0, BodySHA256: sha(nil)}},
	}
	if !reflect.DeepEqual(recs, want) {
		t.Errorf("got %+v\nwant %+v", recs, want)
	}
	// A text shorter than announced is an error, not a misparse.
	if _, err := parsePagerFetch([]byte(strings.Replace(out, "size.physical: 0", "size.physical: 3", 1))); err == nil {
		t.Error("no error for short text")
	}
}

func TestDiffAndCheck(t *testing.T) {
	a := &View{Mailboxes: expectedMailboxes(), Subscriptions: []string{"INBOX", "Sub"}}
	b := &View{Mailboxes: expectedMailboxes(), Subscriptions: []string{"INBOX", "Gone"}}
	if d := Diff(a, a); len(d) != 0 {
		t.Errorf("Diff(a, a) = %q", d)
	}
	b.Mailboxes[0].UIDNext = 21
	b.Mailboxes[0].Messages[1].GUID = "other"
	b.Mailboxes[0].Messages[2].BodySHA256 = sha([]byte("x"))
	b.Mailboxes[1].Messages = append(b.Mailboxes[1].Messages, Message{UID: 9, GUID: s1Base})
	b.Mailboxes[1].Count = 2
	b.Mailboxes = b.Mailboxes[:2]
	got := Diff(a, b)
	want := []string{
		`mailbox "INBOX": UIDNEXT a=20 b=21`,
		`mailbox "INBOX" uid 5: GUID a=` + m2Base + ` b=other`,
		`mailbox "INBOX" uid 8: body a=` + sha(m3Body)[:12] + ` (55 bytes) b=` + sha([]byte("x"))[:12] + ` (55 bytes)`,
		`mailbox "Sub" uid 9: only in b (GUID ` + s1Base + `)`,
		`mailbox "Übersicht": only in a (GUID ` + uebGUID + `, 0 messages)`,
		`subscription "Gone": only in b`,
		`subscription "Sub": only in a`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff:\n got %q\nwant %q", got, want)
	}

	b.Warnings = []string{"doveadm(twinboxtest): Warning: Fixed a duplicate: x -> y", "Error: something"}
	wantCheck := []string{
		"dovecot warning [Fixed a duplicate]: doveadm(twinboxtest): Warning: Fixed a duplicate: x -> y",
		"dovecot warning: Error: something",
		`mailbox "Sub": UIDs 2 and 9 have the same GUID ` + s1Base,
	}
	if got := b.Check(); !reflect.DeepEqual(got, wantCheck) {
		t.Errorf("Check:\n got %q\nwant %q", got, wantCheck)
	}
	if got := filterLog("doveadm: Info: fine\nfoo: Warning: bar\nsomething dotlock here\n"); len(got) != 2 {
		t.Errorf("filterLog = %q", got)
	}
}
