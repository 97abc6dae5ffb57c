package session_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// The scenario helpers (internal/testmail): two fresh roots; a sync that
// must not report changes during it; one sync, then identical replicas and
// an idle sync; an idle sync.
var (
	roots      = testmail.Roots
	sync2      = testmail.SyncClean
	settle     = testmail.Settle
	assertIdle = testmail.AssertIdle
)

func TestFirstSyncIntoEmpty(t *testing.T) {
	a, b := roots(t)
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, testmail.Deliver(t, a, "INBOX", "hello"))
	}
	testmail.Deliver(t, a, "Work", "work mail")
	// A's UIDs before B exists.
	sync2(t, a, filepath.Join(t.TempDir(), "scratch"))
	before := testmail.UIDs(t, a, "INBOX")
	settle(t, a, b)
	slices.Sort(want)
	if got := testmail.Files(t, b, "INBOX"); !reflect.DeepEqual(got, want) {
		t.Fatalf("B INBOX = %v, want %v (same base names)", got, want)
	}
	// A's UIDs did not change: B took A's mailbox identity.
	ua, ub := testmail.UIDs(t, a, "INBOX"), testmail.UIDs(t, b, "INBOX")
	if !reflect.DeepEqual(ua, ub) || !reflect.DeepEqual(ua, before) || len(ua) != 5 {
		t.Fatalf("UIDs before=%v A=%v B=%v", before, ua, ub)
	}
}

func TestSameNextUIDOnBothSides(t *testing.T) {
	a, b := roots(t)
	common := testmail.Deliver(t, a, "INBOX", "common")
	settle(t, a, b)
	ma := testmail.Deliver(t, a, "INBOX", "only on A")
	mb := testmail.Deliver(t, b, "INBOX", "only on B")
	s := sync2(t, a, b)
	if s.Renumbered != 2 {
		t.Errorf("renumbered %d messages, want 2", s.Renumbered)
	}
	testmail.Converged(t, a, b)
	u := testmail.UIDs(t, a, "INBOX")
	// UID 2 was given to different messages on each side: both get new
	// UIDs >= 3, in GUID order; UID 1 keeps its message.
	lo, hi := min(ma, mb), max(ma, mb)
	want := map[uint32]string{1: common, 3: lo, 4: hi}
	if !reflect.DeepEqual(u, want) {
		t.Fatalf("UIDs = %v, want %v", u, want)
	}
	if n := testmail.Uidlist(t, a, "INBOX").NextUID; n != 5 {
		t.Fatalf("UIDNEXT = %d, want 5", n)
	}
	assertIdle(t, a, b)
}

func TestSeenAndFlaggedBothSurvive(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "x")
	settle(t, a, b)
	testmail.SetFlags(t, a, "INBOX", m, "S")
	testmail.SetFlags(t, b, "INBOX", m, "F")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if f := testmail.Flags(t, r, "INBOX", m); f != "FS" {
			t.Fatalf("%s: flags %q, want FS", r, f)
		}
	}
}

func TestSetAndClearLaterWins(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "x")
	testmail.SetFlags(t, a, "INBOX", m, "S")
	settle(t, a, b)
	testmail.SetFlags(t, a, "INBOX", m, "")      // cleared on A first
	time.Sleep(2 * time.Millisecond)             // the scan stamps the change; order it
	sync2(t, a, filepath.Join(t.TempDir(), "x")) // A's scan records the clear now
	testmail.SetFlags(t, b, "INBOX", m, "SR")    // B: \Answered set later, \Seen kept
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if f := testmail.Flags(t, r, "INBOX", m); f != "R" && f != "RS" {
			t.Fatalf("%s: flags %q", r, f)
		}
	}
}

func TestExpungeBeatsFlagChange(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "x")
	keep := testmail.Deliver(t, a, "INBOX", "y")
	settle(t, a, b)
	testmail.Expunge(t, a, "INBOX", m)
	testmail.SetFlags(t, b, "INBOX", m, "FS")
	settle(t, a, b)
	if got := testmail.Files(t, b, "INBOX"); !reflect.DeepEqual(got, []string{keep}) {
		t.Fatalf("B INBOX = %v, want only %s", got, keep)
	}
}

// A folder rm -rf'd on B comes back from A, with its GUID and UIDVALIDITY.
// Its messages get new UIDs (on both sides): B's new directory shows a
// NEXTUID above their old ones (UIDs B used stay used, also if the sync
// stops before the messages are back), and a Dovecot that read it would
// take a message listed below it later for an expunged one that
// reappeared. Their old UIDs name nothing else.
func TestFolderRmRfIsRestored(t *testing.T) {
	a, b := roots(t)
	va, vb := newDovecotView(), newDovecotView()
	m1 := testmail.Deliver(t, a, "Work", "1")
	m2 := testmail.Deliver(t, a, "Work", "2")
	settle(t, a, b)
	guid := testmail.Uidlist(t, a, "Work").GUID
	uids := testmail.UIDs(t, a, "Work")
	syncWatched(t, a, b, va, vb)
	if err := os.RemoveAll(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	syncWatched(t, a, b, va, vb)
	settle(t, a, b)
	want := []string{m1, m2}
	slices.Sort(want)
	if got := testmail.Files(t, b, "Work"); !reflect.DeepEqual(got, want) {
		t.Fatalf("B Work = %v, want %v", got, want)
	}
	if g := testmail.Uidlist(t, b, "Work").GUID; g != guid {
		t.Fatalf("restored mailbox has GUID %x, want %x", g, guid)
	}
	for _, r := range []string{a, b} {
		for u, g := range testmail.UIDs(t, r, "Work") {
			if _, ok := uids[u]; ok {
				t.Fatalf("%s: restored message %s at old UID %d (before: %v)", r, g, u, uids)
			}
		}
		// A renumbered message's old record may stay, without its file
		// (an expunged message's record, as Dovecot keeps them), naming
		// what it named before, never another message.
		for u, g := range testmail.Records(t, r, "Work") {
			if was, ok := uids[u]; ok && was != g {
				t.Fatalf("%s: old UID %d now names %s (before: %v)", r, u, g, uids)
			}
		}
	}
	// Whole on both sides, as Dovecot sees it.
	for _, r := range []string{a, b} {
		got := slices.Sorted(maps.Values(testmail.UIDs(t, r, "Work")))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: Work holds %v, want %v", r, got, want)
		}
	}
}

func TestWholeRootRmRfIsRestored(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "INBOX", "1")
	testmail.Deliver(t, a, "Work/Projects", "2")
	settle(t, a, b)
	snap := testmail.UIDs(t, a, "INBOX")
	if err := os.RemoveAll(b); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	if u := testmail.UIDs(t, b, "INBOX"); !reflect.DeepEqual(u, snap) {
		t.Fatalf("B INBOX UIDs %v, want %v", u, snap)
	}
	if u := testmail.UIDs(t, a, "INBOX"); !reflect.DeepEqual(u, snap) {
		t.Fatalf("A INBOX UIDs changed: %v, want %v", u, snap)
	}
}

// A uidlist lost while its directory stays is restored from the index:
// same GUID and UIDs, under a new UIDVALIDITY on both sides (Dovecot may
// have given UIDs there that no scan saw; design §6 5a).
func TestLostUidlistIsRestoredFromIndex(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Work", "1")
	testmail.Deliver(t, a, "Work", "2")
	settle(t, a, b)
	ul := testmail.Uidlist(t, b, "Work")
	uids := testmail.UIDs(t, b, "Work")
	if err := os.Remove(filepath.Join(testmail.Dir(t, b, "Work"), "dovecot-uidlist")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	for _, r := range []string{a, b} {
		nu := testmail.Uidlist(t, r, "Work")
		if nu.GUID != ul.GUID || nu.UIDValidity <= ul.UIDValidity {
			t.Fatalf("%s: uidlist not restored: GUID %x V %d, was %x V %d (want the GUID under a new UIDVALIDITY)", r, nu.GUID, nu.UIDValidity, ul.GUID, ul.UIDValidity)
		}
		if u := testmail.UIDs(t, r, "Work"); !reflect.DeepEqual(u, uids) {
			t.Fatalf("%s: Work UIDs %v, were %v", r, u, uids)
		}
	}
	testmail.Converged(t, a, b)
}

func TestLostUidlistAndIndexMerges(t *testing.T) {
	a, b := roots(t)
	m1 := testmail.Deliver(t, a, "Work", "1")
	testmail.Deliver(t, a, "Work", "2")
	settle(t, a, b)
	// B loses the uidlist and its index: Dovecot-style regeneration gives a
	// new GUID; the mailbox merges with A's copy, nothing lost.
	os.Remove(filepath.Join(testmail.Dir(t, b, "Work"), "dovecot-uidlist"))
	os.Remove(filepath.Join(b, "twinbox.db"))
	m3 := testmail.Deliver(t, b, "Work", "3")
	settle(t, a, b)
	files := testmail.Files(t, a, "Work")
	if len(files) != 3 || !slices.Contains(files, m1) || !slices.Contains(files, m3) {
		t.Fatalf("A Work = %v", files)
	}
}

func TestRenameByMvAndByDovecotLog(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "Old", "x")
	testmail.Deliver(t, a, "Other", "y")
	settle(t, a, b)
	testmail.Rename(t, a, "Old", "New")
	testmail.Rename(t, b, "Other", "Renamed")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		got := testmail.Mailboxes(t, r)
		want := []string{"INBOX", "New", "Renamed"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: mailboxes %v, want %v", r, got, want)
		}
		if f := testmail.Files(t, r, "New"); !reflect.DeepEqual(f, []string{m}) {
			t.Fatalf("%s New = %v", r, f)
		}
	}
}

func TestRenameWhileMailArrivesInOldName(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Old", "x")
	settle(t, a, b)
	testmail.Rename(t, a, "Old", "New")
	late := testmail.Deliver(t, b, "Old", "arrived on B under the old name")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		testmail.WantMailboxes(t, []string{"INBOX", "New"}, r)
		if !slices.Contains(testmail.Files(t, r, "New"), late) {
			t.Fatalf("%s: late message not in New", r)
		}
	}
}

func TestConcurrentRenames(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "X", "x")
	testmail.Deliver(t, a, "Y", "y")
	settle(t, a, b)
	// The same mailbox renamed on both sides: the later rename wins.
	testmail.Rename(t, a, "X", "FromA")
	sync2(t, a, filepath.Join(t.TempDir(), "c")) // A's scan stamps its rename first
	time.Sleep(2 * time.Millisecond)
	testmail.Rename(t, b, "X", "FromB")
	// Two mailboxes renamed to one name: one is renamed aside.
	testmail.Rename(t, a, "Y", "Same")
	testmail.Deliver(t, b, "Same", "new on B")
	settle(t, a, b)
	got := testmail.Mailboxes(t, a)
	if !slices.Contains(got, "FromB") || slices.Contains(got, "FromA") {
		t.Fatalf("mailboxes %v: want the later rename FromB", got)
	}
	if !slices.Contains(got, "Same") {
		t.Fatalf("mailboxes %v", got)
	}
}

func TestSameFolderCreatedOnBothSides(t *testing.T) {
	a, b := roots(t)
	ma := testmail.Deliver(t, a, "Lists", "from A")
	mb := testmail.Deliver(t, b, "Lists", "from B")
	settle(t, a, b)
	want := []string{ma, mb}
	slices.Sort(want)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "Lists"); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s Lists = %v, want %v", r, got, want)
		}
	}
}

func TestDeleteWithIntentKeepsUnseenMail(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Proj", "old 1")
	testmail.Deliver(t, a, "Proj", "old 2")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, a, "Proj")
	late := testmail.Deliver(t, b, "Proj", "arrived on B after the delete")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "Proj"); !reflect.DeepEqual(got, []string{late}) {
			t.Fatalf("%s Proj = %v, want only the late message", r, got)
		}
	}
}

func TestDeleteWithIntentReplicates(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Proj", "old 1")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, a, "Proj")
	settle(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX"}, a, b)
}

func TestMassExpungeHeld(t *testing.T) {
	a, b := roots(t)
	var ms []string
	for i := 0; i < 60; i++ {
		ms = append(ms, testmail.Deliver(t, a, "Archive", fmt.Sprint(i)))
	}
	settle(t, a, b)
	for _, m := range ms {
		testmail.Expunge(t, a, "Archive", m)
	}
	s := testmail.Sync(t, a, b, session.Options{})
	if len(s.Held) != 1 || s.Held[0].Count != 60 {
		t.Fatalf("held = %+v, want 60 in Archive", s.Held)
	}
	if n := len(testmail.Files(t, b, "Archive")); n != 60 {
		t.Fatalf("B lost %d messages to a held mass expunge", 60-n)
	}
	// Still held on the next sync.
	s = testmail.Sync(t, a, b, session.Options{})
	if len(s.Held) != 1 {
		t.Fatalf("held expunges forgotten: %+v", s.Held)
	}
	s = testmail.Sync(t, a, b, session.Options{AllowMassExpunge: true})
	if n := len(testmail.Files(t, b, "Archive")); n != 0 {
		t.Fatalf("released mass expunge left %d messages on B", n)
	}
	testmail.Converged(t, a, b)
}

func TestKeywordsWithDifferentLetters(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "x")
	settle(t, a, b)
	testmail.WriteKeywords(t, a, "INBOX", []string{"Work", "$Label1"})
	testmail.WriteKeywords(t, b, "INBOX", []string{"Home", "Work"})
	testmail.SetFlags(t, a, "INBOX", m, "Sb") // $Label1
	settle(t, a, b)
	kb := testmail.Keywords(t, b, "INBOX")
	f := testmail.Flags(t, b, "INBOX", m)
	var names []string
	for _, c := range f {
		if c >= 'a' && c <= 'z' {
			names = append(names, kb[c-'a'])
		}
	}
	if !reflect.DeepEqual(names, []string{"$Label1"}) || !strings.Contains(f, "S") {
		t.Fatalf("B flags %q keywords %v -> %v, want $Label1 and S", f, kb, names)
	}
}

func TestMoreThan26Keywords(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "x")
	settle(t, a, b)
	var kw []string
	var letters []byte
	for i := 0; i < 26; i++ {
		kw = append(kw, fmt.Sprintf("kw%02d", i))
		letters = append(letters, byte('a'+i))
	}
	testmail.WriteKeywords(t, a, "INBOX", kw)
	testmail.SetFlags(t, a, "INBOX", m, string(letters))
	settle(t, a, b)
	if f := testmail.Flags(t, b, "INBOX", m); len(f) != 26 {
		t.Fatalf("B has %d keyword letters, want 26", len(f))
	}
}

func TestBackupMakesExactCopy(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "INBOX", "1")
	m := testmail.Deliver(t, a, "Work", "2")
	testmail.SetFlags(t, a, "Work", m, "S")
	testmail.Deliver(t, b, "INBOX", "B's own")
	testmail.Deliver(t, b, "Junk", "B's junk")
	s := testmail.Sync(t, a, b, session.Options{Backup: true})
	if s.Changed {
		t.Fatalf("backup skipped steps: %v", s.ResultB.Skipped)
	}
	testmail.Converged(t, a, b)
	if got := testmail.Mailboxes(t, b); !reflect.DeepEqual(got, []string{"INBOX", "Work"}) {
		t.Fatalf("B mailboxes %v", got)
	}
	s = testmail.Sync(t, a, b, session.Options{Backup: true})
	if s.ResultB.Added+s.ResultB.Expunged+s.ResultB.Flagged != 0 || s.ResultA.Added+s.ResultA.Expunged != 0 {
		t.Fatalf("second backup did work: A=%+v B=%+v", s.ResultA, s.ResultB)
	}
}

func TestMoveBetweenFoldersIsLinkedNotSent(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "to be moved")
	settle(t, a, b)
	// A client moves it: Dovecot hardlinks (same base name) and expunges.
	src := testmail.Find(t, a, "INBOX", m)
	dst := testmail.Dir(t, a, "Archive")
	os.MkdirAll(filepath.Join(dst, "cur"), 0o700)
	os.MkdirAll(filepath.Join(dst, "new"), 0o700)
	os.MkdirAll(filepath.Join(dst, "tmp"), 0o700)
	if err := os.Link(src, filepath.Join(dst, "cur", filepath.Base(src))); err != nil {
		t.Fatal(err)
	}
	os.Remove(src)
	s := sync2(t, a, b)
	if s.ResultB.Fetched != 0 || s.ResultB.Linked != 1 {
		t.Fatalf("move: B fetched %d, linked %d; want 0 and 1", s.ResultB.Fetched, s.ResultB.Linked)
	}
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
}

func TestThreeReplicas(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	testmail.Deliver(t, a, "INBOX", "a1")
	testmail.Deliver(t, b, "INBOX", "b1")
	testmail.Deliver(t, c, "Work", "c1")
	for i := 0; i < 2; i++ {
		sync2(t, a, b)
		sync2(t, b, c)
		sync2(t, c, a)
	}
	testmail.Converged(t, a, b)
	testmail.Converged(t, b, c)
}

func TestSyncWithItselfRefused(t *testing.T) {
	a, _ := roots(t)
	testmail.Deliver(t, a, "INBOX", "x")
	sync2(t, a, filepath.Join(t.TempDir(), "scratch")) // gives a its index
	cp := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(cp, os.DirFS(a)); err != nil {
		t.Fatal(err)
	}
	// A copied root carries the same index, so the same replica ID.
	_, err := testmail.TrySync(a, cp, session.Options{})
	if err == nil || !strings.Contains(err.Error(), "same replica ID") {
		t.Fatalf("sync with a copy of itself: %v", err)
	}
}

// scan brings a replica's index up to date with its disk, as the start of
// a sync (or an interrupted one) does.
func scan(t *testing.T, root string) {
	t.Helper()
	r, err := index.Open(context.Background(), maildir.Location{Root: root}, index.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Found by the property test: a folder deleted with intent on A, rm -rf'd
// on B and then made anew on B (empty). B's new mailbox merges into the
// deleted one; the merge must keep it alive and bring it to A in one sync.
func TestEmptyFolderRecreatedOverDeletedOne(t *testing.T) {
	a, b := roots(t)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, a, "Lists")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	if err := os.RemoveAll(testmail.Dir(t, b, "Lists")); err != nil {
		t.Fatal(err)
	}
	testmail.DeleteWithIntent(t, a, "Lists")
	scan(t, a)
	scan(t, b)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, b, "Lists")); err != nil {
		t.Fatal(err)
	}
	sync2(t, b, a)
	testmail.Converged(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "Lists"}, a, b)
	assertIdle(t, a, b)
}

// Found by the property test: a folder rm -rf'd on B while its only other
// copy was gone too (A lost its root). The folder comes back empty with
// its GUID; B restores it, so under a new UIDVALIDITY (Dovecot may have
// given UIDs there that no scan saw), and UID 1, which named a message on
// B, names no other message (contract §3.1).
func TestRmRfFolderNeverReusesUIDs(t *testing.T) {
	a, b := roots(t)
	m0 := testmail.Deliver(t, a, "Work", "0")
	settle(t, a, b)
	before := testmail.Uidlist(t, b, "Work")
	if err := os.RemoveAll(a); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	sync2(t, a, b)
	m1 := testmail.Deliver(t, a, "Work", "1")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		ul := testmail.Uidlist(t, r, "Work")
		if ul.GUID != before.GUID || ul.UIDValidity <= before.UIDValidity {
			t.Fatalf("%s: Work is %x/%d, was %x/%d: want the same GUID under a new UIDVALIDITY", r, ul.GUID, ul.UIDValidity, before.GUID, before.UIDValidity)
		}
		u := testmail.UIDs(t, r, "Work")
		t.Logf("%s: Work %d %v", r, ul.UIDValidity, u)
		for uid, g := range u {
			if uid == 1 && g != m0 {
				t.Fatalf("%s: UID 1 named %s, now %s (%v)", r, m0, g, u)
			}
		}
		if len(u) != 1 || u[2] != m1 {
			t.Fatalf("%s: Work UIDs %v, want 2 -> %s", r, u, m1)
		}
	}
}

// A folder rm -rf'd on B comes back from A; a UID that B had given to a
// message A never saw is not given to another one, and the messages that
// come back take no UID that B's new directory is already past (see
// TestFolderRmRfIsRestored).
func TestRmRfFolderRefillReusesNoUID(t *testing.T) {
	a, b := roots(t)
	m0 := testmail.Deliver(t, a, "Work", "0")
	settle(t, a, b)
	mb := testmail.Deliver(t, b, "Work", "only on B")
	scan(t, b) // B gives it UID 2
	ma := testmail.Deliver(t, a, "Work", "only on A")
	scan(t, a) // A gives its own message UID 2
	if err := os.RemoveAll(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	u := testmail.UIDs(t, b, "Work")
	if u[1] != "" {
		t.Fatalf("B Work UIDs %v: UID 1 named %s on B, now names %s", u, m0, u[1])
	}
	found0 := false
	for _, g := range u {
		found0 = found0 || g == m0
	}
	if !found0 {
		t.Fatalf("B Work UIDs %v: %s missing", u, m0)
	}
	if u[2] != "" {
		t.Fatalf("B Work UIDs %v: UID 2 named %s on B, must not name another message", u, mb)
	}
	found := false
	for _, g := range u {
		found = found || g == ma
	}
	if !found {
		t.Fatalf("B Work UIDs %v: %s missing", u, ma)
	}
}

// Found by the property test: a folder made on both sides under one name
// (so the two merge), then rm -rf'd on A before the merge was applied
// there. A's missing mailbox is the one merged away: it must be made anew
// at the merged name, not fail the sync ("locating mailbox to merge").
func TestMergeIntoMissingFolder(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "a/b", "on A, lost with the rm -rf")
	scan(t, a)
	m1 := testmail.Deliver(t, b, "a/b", "on B 1")
	m2 := testmail.Deliver(t, b, "a/b", "on B 2")
	scan(t, b) // B's mailbox has handed out more UIDs: it is the keeper
	if err := os.RemoveAll(testmail.Dir(t, a, "a/b")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	want := []string{m1, m2}
	slices.Sort(want)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "a/b"); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s a/b = %v, want %v", r, got, want)
		}
	}
}

// Found by the property test: a folder that got mail on B after A deleted
// it comes back to A (contract §5). A's dovecot.mailbox.log still holds
// the old DELETE record: when A later loses the directory without intent,
// that record must not make it a delete (which would expunge on B).
func TestStaleDeleteRecordIsNotADelete(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Proj", "old")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, a, "Proj")
	late := testmail.Deliver(t, b, "Proj", "late")
	settle(t, a, b)
	if err := os.RemoveAll(testmail.Dir(t, a, "Proj")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "Proj"); !reflect.DeepEqual(got, []string{late}) {
			t.Fatalf("%s Proj = %v, want %s", r, got, late)
		}
	}
}

// Found by the property test: a folder deleted with intent on A and made
// anew by a delivery before any scan is a new mailbox, not the old one
// restored from the index (that would keep the stale DELETE record around
// for the old GUID, and a later rm -rf would become a delete).
func TestDeleteThenRedeliverBeforeScan(t *testing.T) {
	a, b := roots(t)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, a, "Work")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	testmail.DeleteWithIntent(t, a, "Work")
	m1 := testmail.Deliver(t, b, "Work", "on B, never seen by A")
	m3 := testmail.Deliver(t, a, "Work", "on A, after the delete")
	settle(t, a, b)
	if err := os.RemoveAll(testmail.Dir(t, a, "Work")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	want := []string{m1, m3}
	slices.Sort(want)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "Work"); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s Work = %v, want %v", r, got, want)
		}
	}
}

// Found by the property test: a rename whose target is in the way is
// skipped after the mailbox was moved to its temporary name; the next
// sync must not fail moving it there again.
func TestSkippedRenameRetried(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "Arch", "x")
	settle(t, a, b)
	testmail.Rename(t, a, "Arch", "Work")
	stray := filepath.Join(b, ".Work")
	if err := os.Mkdir(stray, 0o700); err != nil { // not a mailbox: in the way
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		s, err := testmail.TrySync(a, b, session.Options{})
		if err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		if !s.Changed {
			t.Fatalf("sync %d: rename onto a stray directory not reported", i)
		}
	}
	if err := os.Remove(stray); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	if got := testmail.Files(t, b, "Work"); !reflect.DeepEqual(got, []string{m}) {
		t.Fatalf("B Work = %v", got)
	}
}

// Found by the property test: a folder deleted with intent and made anew
// by a delivery before the next scan merges into the deleted mailbox. The
// merge voids the deleting side's records, so the peer's unchanged records
// must be compared in full, or the deleted message survives on the peer.
func TestDeleteThenRedeliverExpungesOnPeer(t *testing.T) {
	a, b := roots(t)
	testmail.Deliver(t, a, "Work", "deleted with the folder")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, a, "Work")
	m1 := testmail.Deliver(t, a, "Work", "after the delete")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "Work"); !reflect.DeepEqual(got, []string{m1}) {
			t.Fatalf("%s Work = %v, want only %s", r, got, m1)
		}
	}
}

// Found by the property test: B's copy of a folder is rm -rf'd (with a
// message A never got) and a new folder of that name appears on B before
// the next sync; it merges into the missing one. The merge must keep the
// UIDs B had used in that mailbox: the next message must not get UID 1.
func TestMergeIntoMissingFolderKeepsUIDs(t *testing.T) {
	a, b := roots(t)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, a, "Work")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	m1 := testmail.Deliver(t, b, "Work", "lost with the rm -rf")
	scan(t, b)
	if err := os.RemoveAll(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	scan(t, b)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, b, "Work")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	m2 := testmail.Deliver(t, b, "Work", "new")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if u := testmail.UIDs(t, r, "Work"); u[1] != "" || len(u) != 1 {
			t.Fatalf("%s Work UIDs %v: UID 1 named %s on B, %s must get another", r, u, m1, m2)
		}
	}
}

// Found by the property test: a folder rm -rf'd on B and made anew by a
// delivery before B's next scan. B's index restores the folder's identity,
// but the messages that went with the rm -rf are missing, not expunged:
// they come back from A instead of being expunged there. Not under their
// old UIDs: B's restored uidlist already shows a NEXTUID above them (to
// Dovecot the message would be an expunged one that reappeared), so they
// get new UIDs on both sides, and the old UID names nothing else.
func TestRmRfFolderThenDeliveryBeforeScan(t *testing.T) {
	a, b := roots(t)
	va, vb := newDovecotView(), newDovecotView()
	m0 := testmail.Deliver(t, a, "Lists", "0")
	syncWatched(t, a, b, va, vb)
	uids := testmail.UIDs(t, a, "Lists")
	if err := os.RemoveAll(testmail.Dir(t, b, "Lists")); err != nil {
		t.Fatal(err)
	}
	m1 := testmail.Deliver(t, b, "Lists", "1")
	syncWatched(t, a, b, va, vb)
	syncWatched(t, a, b, va, vb)
	testmail.Converged(t, a, b)
	assertIdle(t, a, b)
	want := []string{m0, m1}
	slices.Sort(want)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "Lists"); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s Lists = %v, want %v", r, got, want)
		}
	}
	for u, g := range testmail.UIDs(t, a, "Lists") {
		if old, ok := uids[u]; ok && old != g {
			t.Fatalf("A Lists UID %d named %s, now %s", u, old, g)
		}
	}
}

// Found by the property test: a message moved out of INBOX and, after a
// sync, moved back under its old file name while INBOX's uidlist still
// lists that name. Its old UID was expunged on both sides: it must come
// back under a new UID (as Dovecot does), not revive the expunged one.
func TestExpungedMessageReappearsWithNewUID(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "INBOX", "moved away and back")
	testmail.Deliver(t, a, "INBOX", "stays")
	settle(t, a, b)
	move := func(from, to string) {
		src := testmail.Find(t, b, from, m)
		dst := testmail.Dir(t, b, to)
		if err := maildir.CreateMailboxDirs(dst); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(src, filepath.Join(dst, "cur", filepath.Base(src))); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(src); err != nil {
			t.Fatal(err)
		}
	}
	old := testmail.UIDs(t, b, "INBOX")
	move("INBOX", "Archive")
	settle(t, a, b)
	move("Archive", "INBOX")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		u := testmail.UIDs(t, r, "INBOX")
		for uid, g := range u {
			if g == m && old[uid] == m {
				t.Fatalf("%s: %s is back under its expunged UID %d", r, m, uid)
			}
		}
		if !slices.Contains(testmail.Files(t, r, "INBOX"), m) {
			t.Fatalf("%s: %s not in INBOX", r, m)
		}
	}
}

// Found by the property test: a sync that recreates a folder (B deleted
// it, A got new mail in it) is interrupted after the create. The folder's
// uidlist must already carry the UIDNEXT B had reached there, or the next
// delivery takes UID 1, which named another message on B (§3.1).
func TestInterruptedRecreateKeepsUIDNext(t *testing.T) {
	a, b := roots(t)
	m0 := testmail.Deliver(t, a, "Work", "seen by B, deleted with the folder")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, b, "Work")
	testmail.Deliver(t, a, "Work", "new on A: keeps Work alive")
	testmail.Deliver(t, a, "INBOX", "another body to fetch")
	open := func(root string) *index.Replica {
		r, err := index.Open(context.Background(), maildir.Location{Root: root}, index.Options{LockTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ra, rb := open(a), open(b)
	fired := false
	f := faultSpec{kind: faultCancel, side: 1, k: 1} // B's apply: creates done, then cut
	_, err := session.Run(context.Background(), &faulty{Replica: ra, spec: f, fired: &fired}, &faulty{Replica: rb, spec: f, armed: true, fired: &fired}, session.Options{})
	ra.Close()
	rb.Close()
	if err == nil || !fired {
		t.Fatalf("sync not interrupted: %v", err)
	}
	m5 := testmail.Deliver(t, b, "Work", "delivered on B after the cut")
	scan(t, b)
	if u := testmail.UIDs(t, b, "Work"); u[1] == m5 {
		t.Fatalf("B Work UIDs %v: UID 1 named %s on B", u, m0)
	}
	settle(t, a, b)
}

// Found by the property test: A deletes a folder with intent and loses its
// index before the delete is seen; the folder comes back from B (A's new
// index never knew of the delete). When A later loses the folder's
// directory without intent, the old DELETE record must not count.
func TestDeleteRecordBeforeIndexLossIsStale(t *testing.T) {
	a, b := roots(t)
	m := testmail.Deliver(t, a, "Proj", "x")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, a, "Proj")
	if err := os.Remove(filepath.Join(a, index.DBName)); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b) // A forgot the delete: Proj comes back
	if err := os.RemoveAll(testmail.Dir(t, a, "Proj")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	for _, r := range []string{a, b} {
		if got := testmail.Files(t, r, "Proj"); !reflect.DeepEqual(got, []string{m}) {
			t.Fatalf("%s Proj = %v, want %s", r, got, m)
		}
	}
}

// Found by the property test: a folder deleted with intent and made anew
// (a new mailbox, whose message is then expunged before a sync) merges
// into the deleted one. The merge rewrites its uidlist under the deleted
// mailbox's identity; the expunged message's stale record must not come
// along and name UID 1, which named the deleted mailbox's message.
func TestMergeDropsStaleUidlistRecords(t *testing.T) {
	a, b := roots(t)
	m0 := testmail.Deliver(t, a, "a", "deleted with the folder")
	settle(t, a, b)
	testmail.DeleteWithIntent(t, a, "a")
	m1 := testmail.Deliver(t, a, "a", "in the new folder, then expunged")
	scan(t, a)
	testmail.Expunge(t, a, "a", m1)
	settle(t, a, b)
	for _, r := range []string{a, b} {
		// No record of the new folder's expunged message, with or
		// without its file (it would name UID 1, which named m0). m0's
		// own record may stay at UID 1 without its file: an expunged
		// message's record, which Dovecot keeps until it rewrites the
		// uidlist, and so does twinbox's apply.
		if u := testmail.UIDs(t, r, "a"); len(u) != 0 {
			t.Fatalf("%s: a lists messages %v (UID 1 named %s)", r, u, m0)
		}
		for u, g := range testmail.Records(t, r, "a") {
			if g != m0 || u != 1 {
				t.Fatalf("%s: uidlist of a lists UID %d as %s (UID 1 named %s)", r, u, g, m0)
			}
		}
	}
}

// Found by the property test: B deletes a folder, loses its index, and a
// sync that brings the folder back from A is cut after the create. A
// message B's client then moves into the folder must not get a UID that A
// holds an expunge for (it would be expunged as that old instance).
func TestInterruptedRecreateAfterIndexLoss(t *testing.T) {
	a, b := roots(t)
	m0 := testmail.Deliver(t, a, "Work", "moved to INBOX, later back")
	settle(t, a, b)
	move := func(root, from, to string) {
		src := testmail.Find(t, root, from, m0)
		if err := os.Link(src, filepath.Join(testmail.Dir(t, root, to), "cur", filepath.Base(src))); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(src); err != nil {
			t.Fatal(err)
		}
	}
	move(a, "Work", "INBOX")
	testmail.Deliver(t, a, "Work", "keeps Work alive")
	settle(t, a, b) // Work: UID 1 expunged (the move), UID 2 the new one
	testmail.DeleteWithIntent(t, b, "Work")
	if err := os.Remove(filepath.Join(b, index.DBName)); err != nil {
		t.Fatal(err)
	}
	open := func(root string) *index.Replica {
		r, err := index.Open(context.Background(), maildir.Location{Root: root}, index.Options{LockTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ra, rb := open(a), open(b)
	fired := false
	f := faultSpec{kind: faultFetch, side: 0} // B makes Work, then A's bodies fail
	_, err := session.Run(context.Background(), &faulty{Replica: ra, spec: f, armed: true, fired: &fired}, &faulty{Replica: rb, spec: f, fired: &fired}, session.Options{})
	ra.Close()
	rb.Close()
	if err == nil || !fired {
		t.Fatalf("sync not interrupted: %v", err)
	}
	move(b, "INBOX", "Work")
	settle(t, a, b)
	for _, r := range []string{a, b} {
		found := false
		for _, g := range testmail.UIDs(t, r, "Work") {
			found = found || g == m0
		}
		if !found {
			t.Fatalf("%s: %s lost", r, m0)
		}
	}
}

// Found by the property test: B renames a folder, deletes it with intent
// and makes a new folder under the old name. On A the deleted mailbox
// still sits in the directory the new one needs: the plan's delete must
// free it first, or the create is skipped and every sync fails.
func TestNewFolderWhereDeletedOneStillIs(t *testing.T) {
	a, b := roots(t)
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, a, "a/b")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	testmail.Rename(t, b, "a/b", "Lists")
	scan(t, b)
	testmail.DeleteWithIntent(t, b, "Lists")
	if err := maildir.CreateMailboxDirs(testmail.Dir(t, b, "a/b")); err != nil {
		t.Fatal(err)
	}
	settle(t, a, b)
	testmail.WantMailboxes(t, []string{"INBOX", "a/b"}, a, b)
}

// An expunge of a message that was renumbered on one pair must reach its
// copy on a third replica that still has it under its old UID: the
// instance's Born stamp travels with it (3 replicas; the property test's
// seed 6163758096704320485 before the fix).
func TestExpungeReachesRenumberedCopyOnThirdReplica(t *testing.T) {
	a, b, c := testmail.Roots3(t)
	testmail.Deliver(t, a, "INBOX", "common")
	sync2(t, a, b)
	sync2(t, b, c)
	testmail.Converged(t, a, c)
	testmail.Deliver(t, a, "INBOX", "on A at UID 2")
	mc := testmail.Deliver(t, c, "INBOX", "on C at UID 2")
	sync2(t, b, c) // B takes C's message at UID 2
	sync2(t, a, b) // A and B: UID 2 conflict, both renumbered
	if !slices.Contains(testmail.Files(t, a, "INBOX"), mc) {
		t.Fatal("A did not get C's message")
	}
	testmail.Expunge(t, a, "INBOX", mc)
	sync2(t, a, c) // C still has it at UID 2
	for _, r := range []string{a, c} {
		if slices.Contains(testmail.Files(t, r, "INBOX"), mc) {
			t.Fatalf("%s: the expunged message is back", r)
		}
	}
	for i := 0; i < 2; i++ {
		sync2(t, a, b)
		sync2(t, b, c)
		sync2(t, c, a)
	}
	testmail.Converged(t, a, b)
	testmail.Converged(t, b, c)
	for _, r := range []string{a, b, c} {
		if slices.Contains(testmail.Files(t, r, "INBOX"), mc) {
			t.Fatalf("%s: the expunged message is back", r)
		}
	}
}
