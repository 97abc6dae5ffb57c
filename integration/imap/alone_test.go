package imap

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/maildir"
)

// Errors that Dovecot logs with IMAP clients alone, no twinbox anywhere
// (TestDovecotAloneLogs proves each): the stress test accepts exactly these
// lines, and only about a folder that a client (or a sync replicating a
// client's DELETE or RENAME) deleted or renamed.
var (
	// A client DELETEs a folder while another APPENDs into it: the saver's
	// file in the folder's tmp/ went with the folder, and Dovecot's
	// clean-up of it fails.
	inherentSaveIntoDeleted = regexp.MustCompile(`: Error: unlink\((\S+)/tmp/[^/)]+\) failed: No such file or directory \(in maildir-save\.c:\d+\)$`)
	// A client RENAMEs a folder with children to a name whose child
	// folder exists already: Dovecot renames the parent, then fails on
	// the child.
	inherentRenameChildExists = regexp.MustCompile(`: Error: rename\((\S+), (\S+)\) failed: Directory not empty$`)
	// Dovecot 2.4's other forms of the first: the saver's open() or
	// utime() of its tmp/ file fails (TestDovecotAloneRenameRaces on 2.4:
	// 10 and 18 such lines in 150 rounds).
	inherentSaveIntoDeleted24 = regexp.MustCompile(`: Error: Mailbox \S+: (?:open|Saving mail: utime)\((\S+)/tmp/[^/)]+\) failed: No such file or directory$`)
)

// inherentLine reports whether a Dovecot log line is one of the errors
// Dovecot logs without twinbox, about one of the folders in gone (Maildir++
// directory names under root, ".S1" say).
func inherentLine(root, line string, gone map[string]bool) bool {
	for _, re := range []*regexp.Regexp{inherentSaveIntoDeleted, inherentRenameChildExists, inherentSaveIntoDeleted24, saveRenameSwapped} {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, p := range m[1:] {
			if rel, err := filepath.Rel(root, p); err == nil && gone[rel] {
				return true
			}
		}
	}
	return false
}

// Dovecot 2.3 names the folder by its directory ("Maildir /root/.S1"),
// 2.4 by its mailbox name ("Mailbox S1/Kid").
var uidValidityChanged = regexp.MustCompile(`: Warning: (?:Maildir (\S+)|Mailbox (\S+)): UIDVALIDITY changed \(\d+ -> \d+\)$`)

// mergedFolderLine reports whether line is Dovecot's notice that one of
// the folders in gone changed its UIDVALIDITY (a merge of a folder made on
// both sides).
func mergedFolderLine(root, line string, gone map[string]bool) bool {
	m := uidValidityChanged.FindStringSubmatch(line)
	if m == nil {
		return false
	}
	if m[2] != "" {
		return gone["."+strings.ReplaceAll(m[2], "/", ".")]
	}
	rel, err := filepath.Rel(root, m[1])
	return err == nil && gone[rel]
}

// TestInherentLine24: Dovecot 2.4's forms of a save into a deleted folder
// are forgiven for a scratch folder only.
func TestInherentLine24(t *testing.T) {
	gone := map[string]bool{".S1": true, ".S1.Kid": true}
	for _, c := range []struct {
		line string
		want bool
	}{
		{"Nov 28 18:24:59 imap(u)<1><x>: Error: Mailbox S1/Kid: open(/r/.S1.Kid/tmp/1795890299.M350631P12312.vm) failed: No such file or directory", true},
		{"Nov 28 18:24:59 imap(u)<1><x>: Error: Mailbox S1: Saving mail: utime(/r/.S1/tmp/1795890299.M365972P12316.vm) failed: No such file or directory", true},
		{"Nov 28 18:24:59 imap(u)<1><x>: Error: Mailbox Work: open(/r/.Work/tmp/1795890299.M3P1.vm) failed: No such file or directory", false},
		{"Nov 28 18:24:59 imap(u)<1><x>: Error: Mailbox S1: open(/r/.S1/cur/1795890299.M3P1.vm) failed: No such file or directory", false},
	} {
		if got := inherentLine("/r", c.line, gone); got != c.want {
			t.Errorf("inherentLine(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}

// TestMergedFolderLine: the UIDVALIDITY notice of both Dovecot versions is
// recognised for a scratch folder, and only for one.
func TestMergedFolderLine(t *testing.T) {
	gone := map[string]bool{".S1": true, ".S1.Kid": true}
	for _, c := range []struct {
		line string
		want bool
	}{
		{"Nov 28 18:15:43 imap(u)<1><x>: Warning: Maildir /r/.S1: UIDVALIDITY changed (1 -> 2)", true},
		{"Nov 28 18:15:43 imap(u)<1><x>: Warning: Mailbox S1/Kid: UIDVALIDITY changed (1795889745 -> 1795889746)", true},
		{"Nov 28 18:15:43 imap(u)<1><x>: Warning: Mailbox Work: UIDVALIDITY changed (1 -> 2)", false},
		{"Nov 28 18:15:43 imap(u)<1><x>: Warning: Maildir /r/.Work: UIDVALIDITY changed (1 -> 2)", false},
		{"Nov 28 18:15:43 imap(u)<1><x>: Warning: Maildir /elsewhere/.S1: UIDVALIDITY changed (1 -> 2)", false},
	} {
		if got := mergedFolderLine("/r", c.line, gone); got != c.want {
			t.Errorf("mergedFolderLine(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}

// TestDovecotAloneLogs: one Dovecot, two IMAP clients, no twinbox. (1) One
// client APPENDs into a folder while the other DELETEs and re-CREATEs it:
// Dovecot logs "unlink(<folder>/tmp/...) failed: No such file or
// directory". (2) RENAME of a folder with a child to a name whose child
// exists: "rename(.S2.Kid, .S1.Kid) failed: Directory not empty", three
// times (childClashLines; the stress test forgives exactly that many for
// each clash it predicts: expectChildClash).
// The test also checks that Dovecot's
// listing shows none of twinbox's hidden names (the premise of how twinbox
// builds and removes folders).
func TestDovecotAloneLogs(t *testing.T) { dovecot.ForEach(t, testDovecotAloneLogs) }

func testDovecotAloneLogs(t *testing.T, d *dovecot.Install) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2 := dial(t, s), dial(t, s)
	defer c1.Close()
	defer c2.Close()

	// (2) first: deterministic.
	for _, n := range []string{"S1/Kid", "S2", "S2/Kid"} {
		if err := c1.Create(n, nil).Wait(); err != nil {
			t.Fatalf("CREATE %s: %v", n, err)
		}
	}
	_ = c1.Rename("S2", "S1", nil).Wait() // Dovecot may answer OK or NO; its log is what counts
	// Dovecot's log process writes the lines a moment later: wait for
	// them, bounded (10 s at most; no assertion on the time).
	for i := 0; i < 1000 && countLines(srv.Log(), renameChildClash) < childClashLines; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := countLines(srv.Log(), renameChildClash); n != childClashLines {
		t.Errorf("Dovecot alone logged %q %d times (want %d) for RENAME S2 S1 with S1/Kid and S2/Kid present; log:\n%s", renameChildClash, n, childClashLines, srv.Log())
	}

	// (1) a race between two clients: bounded rounds, stops at the first
	// such line.
	if err := c1.Create("Box", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	found := false
	var rounds int
	for round := 0; round < 300 && !found; round++ {
		rounds++
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 5 {
				_ = appendErr(c1, "Box", body(fmt.Sprintf("alone %d %d", round, i)))
			}
		}()
		go func() {
			defer wg.Done()
			_ = c2.Delete("Box").Wait()
			_ = c2.Create("Box", nil).Wait()
		}()
		wg.Wait()
		found = findLine(srv.Log(), inherentSaveIntoDeleted)
		c1 = redial(t, s, c1)
		c2 = redial(t, s, c2)
	}
	if !found {
		t.Errorf("Dovecot alone did not log %q in 300 rounds of APPEND against DELETE; log:\n%s", inherentSaveIntoDeleted, srv.Log())
	}
	t.Logf("after %d rounds Dovecot alone logged:\n%s", rounds, errorLines(srv.Log()))

	// Twinbox's hidden names are not mailboxes to Dovecot.
	l := maildir.Location{Root: srv.Root}
	for _, p := range []string{l.HiddenPath("0123456789abcdef0123456789abcdef"), l.HiddenPath("new-1"), l.HiddenPath("del-2")} {
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(p, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(p, srv.UID(), srv.GID()); err != nil {
			t.Fatal(err)
		}
	}
	list, err := c1.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list {
		if strings.Contains(m.Mailbox, maildir.HiddenPrefix) {
			t.Errorf("Dovecot lists twinbox's hidden directory as mailbox %q", m.Mailbox)
		}
	}
}

func countLines(log string, re *regexp.Regexp) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

func findLine(log string, re *regexp.Regexp) bool {
	for _, l := range strings.Split(log, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

func errorLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, ": Error: ") || strings.Contains(l, ": Warning: ") {
			out = append(out, "  "+l)
		}
	}
	return strings.Join(out, "\n")
}

// redial returns c if its session is still alive, else a new logged-in
// client (Dovecot ends a session whose selected folder was deleted).
func redial(t *testing.T, s *side, c *imapclient.Client) *imapclient.Client {
	t.Helper()
	if err := c.Noop().Wait(); err == nil {
		return c
	}
	c.Close()
	return dial(t, s)
}

// TestDovecotAloneDeletedParentListed: one Dovecot, one client, no
// twinbox. DELETE of a folder that has a child removes its directory, yet
// LIST still shows it (with \HasChildren, without \NonExistent or
// \Noselect) and EXAMINE of it answers NO. The IMAP views of the tests
// therefore leave out a listed folder that EXAMINE says does not exist
// when it has children (readViewErr): this is Dovecot's own state after
// its own DELETE, not something twinbox made.
func TestDovecotAloneDeletedParentListed(t *testing.T) {
	dovecot.ForEach(t, testDovecotAloneDeletedParentListed)
}

func testDovecotAloneDeletedParentListed(t *testing.T, d *dovecot.Install) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c := dial(t, s)
	defer c.Close()
	for _, n := range []string{"P", "P/Kid"} {
		if err := c.Create(n, nil).Wait(); err != nil {
			t.Fatalf("CREATE %s: %v", n, err)
		}
	}
	appendMsg(t, c, "P", body("in the parent"))
	if err := c.Delete("P").Wait(); err != nil {
		t.Fatalf("DELETE P: %v", err)
	}
	if _, err := os.Stat(filepath.Join(srv.Root, ".P")); !os.IsNotExist(err) {
		t.Fatalf("Dovecot kept .P after DELETE (stat: %v): the premise changed", err)
	}
	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, m := range list {
		if m.Mailbox == "P" {
			listed = !hasAttr(m.Attrs, imap.MailboxAttrNonExistent) && !hasAttr(m.Attrs, imap.MailboxAttrNoSelect)
		}
	}
	_, exErr := c.Select("P", &imap.SelectOptions{ReadOnly: true}).Wait()
	if !listed || exErr == nil {
		t.Fatalf("Dovecot alone: deleted parent P listed as selectable %v, EXAMINE error %v: the premise of readViewErr changed", listed, exErr)
	}
	t.Logf("Dovecot alone lists the deleted parent P and EXAMINE answers: %v", exErr)
}

// TestDovecotAloneRenameRaces (TWINBOX_LONG=1; about 8 minutes): one
// Dovecot, three IMAP clients, no twinbox. Two clients APPEND into S1 and
// S1/Kid while the third RENAMEs S1 away and back, or DELETEs and CREATEs
// S1/Kid, for 150 rounds. It shows what Dovecot logs by itself when folders
// move under writers (counted per kind in the log), which the stress test
// with folder operations meets too: "duplicate transaction log sequence",
// "Our dotlock file ... was deleted", "dotlock ... was immediately deleted
// under us", stat() of a vanished dovecot.index.cache, unlink() of a
// vanished tmp/ file. It requires the first (the most frequent).
func TestDovecotAloneRenameRaces(t *testing.T) { dovecot.ForEach(t, testDovecotAloneRenameRaces) }

func testDovecotAloneRenameRaces(t *testing.T, d *dovecot.Install) {
	if !longMode() {
		t.Skip("TWINBOX_LONG=1: eight minutes of IMAP clients racing on one Dovecot")
	}
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2, c3 := dial(t, s), dial(t, s), dial(t, s)
	for _, n := range []string{"S1", "S1/Kid"} {
		if err := c1.Create(n, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 150; round++ {
		var wg sync.WaitGroup
		wg.Add(3)
		go func() {
			defer wg.Done()
			for i := range 4 {
				_ = appendErr(c1, "S1/Kid", body(fmt.Sprintf("kid %d %d", round, i)))
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 4 {
				_ = appendErr(c3, "S1", body(fmt.Sprintf("parent %d %d", round, i)))
			}
		}()
		go func() {
			defer wg.Done()
			if round%2 == 0 {
				_ = c2.Rename("S1", "S9", nil).Wait()
				_ = c2.Rename("S9", "S1", nil).Wait()
			} else {
				_ = c2.Delete("S1/Kid").Wait()
				_ = c2.Create("S1/Kid", nil).Wait()
			}
		}()
		wg.Wait()
		c1, c2, c3 = redial(t, s, c1), redial(t, s, c2), redial(t, s, c3)
	}
	kinds := map[string]*regexp.Regexp{
		"duplicate transaction log sequence": regexp.MustCompile(`duplicate transaction log sequence`),
		"our dotlock deleted":                regexp.MustCompile(`Our dotlock file \S+ was deleted`),
		"dotlock deleted under us":           regexp.MustCompile(`dotlock \S+ was immediately deleted under us`),
		"index cache vanished":               regexp.MustCompile(`stat\(\) failed with file \S+/dovecot\.index\.cache`),
		"tmp file vanished":                  regexp.MustCompile(`unlink\(\S+/tmp/\S+\) failed: No such file`),
	}
	counts := map[string]int{}
	for _, l := range strings.Split(srv.Log(), "\n") {
		for k, re := range kinds {
			if re.MatchString(l) {
				counts[k]++
			}
		}
	}
	t.Logf("Dovecot alone, 150 rounds: %v\n%s", counts, errorLines(srv.Log()))
	if counts["duplicate transaction log sequence"] == 0 {
		t.Errorf("Dovecot alone never logged a duplicate transaction log sequence in 150 rounds")
	}
}

// dovecot24SavePanic is the assertion Dovecot 2.4.1 panics on when the index
// commit of a save with keywords fails after the files were moved into
// cur/ (its rollback then needs the keywords sync context it has already
// released): maildir-save.c, maildir_get_dest_filename.
var dovecot24SavePanic = regexp.MustCompile(`: Panic: file maildir-save\.c: line \d+ \(maildir_get_dest_filename\): assertion failed`)

// TestDovecotAloneKeywordSavePanic (Dovecot 2.4 only): one Dovecot, three
// IMAP clients, no twinbox. One COPYs messages with keywords into S1/Kid,
// one APPENDs with a keyword into S1, one DELETEs or RENAMEs S1/Kid or S1
// and re-creates it. Dovecot 2.4.1 soon panics (the imap process dies,
// its client loses the session): it did within 8-71 rounds in five manual
// runs (and after 181 and 106 later); the folder stress on 2.4 met the
// same panic once in six runs.
// The test requires it within 600 rounds, so that it says when a newer
// Dovecot no longer has the bug. Not run on 2.3: there a manual run of
// this race hung a client for ten minutes (not investigated).
func TestDovecotAloneKeywordSavePanic(t *testing.T) {
	if !longMode() {
		// Its clients once hung for the whole 10-minute package timeout
		// (2.4, a race in Dovecot itself): a proof for the long runs only.
		t.Skip("TWINBOX_LONG=1 only")
	}
	dovecot.ForEach(t, testDovecotAloneKeywordSavePanic)
}

func testDovecotAloneKeywordSavePanic(t *testing.T, d *dovecot.Install) {
	if d.Chroot() == "" && !d.Version().Is24() {
		t.Skip("Dovecot 2.4 only (see the comment)")
	}
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2, c3 := dial(t, s), dial(t, s), dial(t, s)
	defer func() { c1.Close(); c2.Close(); c3.Close() }()
	for i := range 3 {
		appendMsg(t, c1, "INBOX", body(fmt.Sprintf("panic source %d", i)), imap.Flag("$K1"), imap.Flag("Work"))
	}
	if err := c1.Create("S1/Kid", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	rounds := 0
	for ; rounds < 600 && !findLine(srv.Log(), dovecot24SavePanic); rounds++ {
		var wg sync.WaitGroup
		wg.Add(3)
		go func() {
			defer wg.Done()
			if _, err := c1.Select("INBOX", nil).Wait(); err != nil {
				return
			}
			for range 3 {
				_, _ = c1.Copy(imap.SeqSetNum(1, 2, 3), "S1/Kid").Wait()
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 3 {
				_ = appendErr(c3, "S1", body(fmt.Sprintf("panic parent %d %d", rounds, i)), imap.Flag("$K2"))
			}
		}()
		go func() {
			defer wg.Done()
			switch rounds % 3 {
			case 0:
				_ = c2.Delete("S1/Kid").Wait()
			case 1:
				_ = c2.Rename("S1", "S3", nil).Wait()
				_ = c2.Rename("S3", "S1", nil).Wait()
			case 2:
				_ = c2.Rename("S1/Kid", "Other", nil).Wait()
				_ = c2.Delete("Other").Wait()
			}
			_ = c2.Create("S1/Kid", nil).Wait()
		}()
		wg.Wait()
		c1, c2, c3 = redial(t, s, c1), redial(t, s, c2), redial(t, s, c3)
	}
	if !findLine(srv.Log(), dovecot24SavePanic) {
		t.Fatalf("Dovecot %s alone did not panic in %d rounds (fixed in this version? then the 2.4 notes in docs/dovecot.md need an update); log:\n%s",
			srv.Version(), rounds, errorLines(srv.Log()))
	}
	for _, l := range strings.Split(srv.Log(), "\n") {
		if dovecot24SavePanic.MatchString(l) {
			t.Logf("Dovecot %s alone panicked after %d rounds:\n  %s", srv.Version(), rounds+1, l)
			break
		}
	}
}

// swappedUnderSession matches what a Dovecot process with a folder open
// logs when the folder's directory was replaced by another mailbox's of
// the same name (TestDovecotAloneFolderSwappedUnderSession); the group is
// the folder's directory.
var swappedUnderSession = regexp.MustCompile(`: Error: Mailbox \S+: (?:Corrupted transaction log file|Transaction log) (\S+)/dovecot\.index\.log(?: seq \d+: indexid changed: \d+ -> \d+ \(sync_offset=\d+\)|: duplicate transaction log sequence \(\d+\))$`)

// TestDovecotAloneFolderSwappedUnderSession: one Dovecot, no twinbox. A
// client has S2 selected; another RENAMEs S2 to S9 and S3 to S2; the
// first STOREs a flag. Dovecot logs "duplicate transaction log sequence"
// or "Corrupted transaction log file .../.S2/dovecot.index.log seq 2:
// indexid changed" (which one depends on the two index files). The stress
// test forgives these lines only for a folder directory that a sync moved
// or made a mailbox into (the same swap, made by twinbox replicating the
// other side's renames, deletes and creates while a client uses the
// folder).
func TestDovecotAloneFolderSwappedUnderSession(t *testing.T) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2 := dial(t, s), dial(t, s)
	for _, n := range []string{"S2", "S3"} {
		if err := c2.Create(n, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			appendMsg(t, c2, n, body(fmt.Sprintf("%s %d", n, i)))
		}
	}
	selectBox(t, c1, "S2")
	if err := c2.Rename("S2", "S9", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c2.Rename("S3", "S2", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	_, err := c1.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect()
	// Dovecot's log process writes the line a moment later: wait for it,
	// bounded (10 s at most; no assertion on the time).
	for i := 0; i < 1000 && countLines(srv.Log(), swappedUnderSession) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := countLines(srv.Log(), swappedUnderSession); n == 0 {
		t.Fatalf("Dovecot alone logged no %q for a folder swapped under a session (STORE: %v); log:\n%s", swappedUnderSession, err, srv.Log())
	}
	t.Logf("STORE: %v; Dovecot alone logged:\n%s", err, errorLines(srv.Log()))
}

// lostLogLine is Dovecot 2.4's error for a folder whose dovecot.index and
// dovecot.index.log a process read from two different folders (the index
// names a log position the log it opened does not have). The stress met it
// once on 2.4 (seed 1795925677426346947: "Mailbox S1: Index .../.S1/dovecot.index:
// index not found via open(): Lost log for seq=3 offset=1448: Missing middle
// file seq=4 (between 3..4294967295, we have seqs 2,3) ...") when a client's
// SELECT of S1 met a sync's swap of S1 (S1 moved aside, S3 moved to S1,
// replicating the other side's RENAME S3 S1 onto a taken name), and once on
// 2.3 (session 8). TestDovecotAloneFolderSwappedByRename did not make
// Dovecot log it (it logs the swap as swappedUnderSession there, the
// folders' logs being at the same sequence);
// TestDovecotAloneResetFoldersSwappedLostLog does, on both versions, when
// the swapped folders' indexes were reset by UIDVALIDITY changes, and the
// stress test forgives it under that condition only (lostLogs).
var lostLogLine = regexp.MustCompile(`: Error: Mailbox \S+: Index (\S+)/dovecot\.index: .*Lost log for seq=\d+ offset=\d+: Missing middle file`)

// reappearedLine is Dovecot's warning that a uidlist lists a file under a
// UID its index has as expunged.
var reappearedLine = regexp.MustCompile(`: Warning: (?:Maildir|Mailbox) \S+: Expunged message reappeared, giving a new UID`)

// TestDovecotAloneFolderSwappedByRename (TWINBOX_LONG=1): one Dovecot, no
// twinbox. Clients SELECT, FETCH and STORE in S1 and S3 (one keeps S1
// selected) while another process swaps the two folders' directories the
// way a sync replicating RENAME S3 S1 onto a taken name does, and as an
// admin's mv(1) would: rename(2) of .S1 aside, of .S3 to .S1, of the aside
// one to .S3. Dovecot 2.3 alone logs swappedUnderSession lines (required:
// the stress test forgives them for folders a sync replaced; 2.3.19.1: 132
// in 600 rounds; 2.4.1 logged none, so there it is not required). It also counts
// lostLogLine (not required: the stress met it once, this test so far
// never) and requires no reappearedLine: S1 and S3 have different
// UIDVALIDITYs, and Dovecot resets a folder's index when the uidlist's
// UIDVALIDITY differs from the index's before it compares UIDs
// (maildir-sync-index.c, maildir_sync_index), so a swap of folders with
// different UIDVALIDITYs cannot make it say "Expunged message reappeared";
// the stress test therefore never forgives that line (it means one
// (name, UIDVALIDITY) named two messages under one UID).
func TestDovecotAloneFolderSwappedByRename(t *testing.T) {
	if !longMode() {
		t.Skip("TWINBOX_LONG=1: a minute of folder swaps under IMAP clients")
	}
	dovecot.ForEach(t, testDovecotAloneFolderSwappedByRename)
}

func testDovecotAloneFolderSwappedByRename(t *testing.T, d *dovecot.Install) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2, c3 := dial(t, s), dial(t, s), dial(t, s)
	defer func() { c1.Close(); c2.Close(); c3.Close() }()
	for i, n := range []string{"S1", "S3"} {
		if err := c2.Create(n, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		for j := range 3 + 5*i {
			appendMsg(t, c2, n, body(fmt.Sprintf("%s %d", n, j)))
		}
		// Different UIDVALIDITYs (Dovecot's counter is time based).
		time.Sleep(1100 * time.Millisecond)
	}
	_, _ = c3.Select("S1", nil).Wait()
	r := srv.Root
	use := func(c *imapclient.Client, box, kw string) {
		if _, err := c.Select(box, nil).Wait(); err == nil {
			_, _ = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, Flags: true}).Collect()
			_, _ = c.Store(imap.SeqSetNum(1, 2, 3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.Flag(kw)}}, nil).Collect()
			_ = c.Unselect().Wait()
		}
	}
	// 2.4.1's processes mostly wait out dotlocks that moved with their
	// folders (a watchdog each, 10 s): fewer rounds there.
	maxRounds := 600
	if srv.Version().Is24() {
		maxRounds = 150
	}
	rounds := 0
	for round := 0; round < maxRounds; round++ {
		rounds++
		var wg sync.WaitGroup
		// A Dovecot process can wait for a dotlock that moved away
		// with its folder (minutes): a stuck round closes the
		// connections, which ends their commands.
		cc1, cc2, cc3 := c1, c2, c3
		dog := time.AfterFunc(10*time.Second, func() { cc1.Close(); cc2.Close(); cc3.Close() })
		wg.Add(4)
		go func() { defer wg.Done(); use(c1, "S1", fmt.Sprintf("$a%d", round%5)) }()
		go func() { defer wg.Done(); use(c2, "S3", fmt.Sprintf("$b%d", round%7)) }()
		go func() {
			defer wg.Done()
			_ = c3.Noop().Wait()
			_, _ = c3.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.Flag(fmt.Sprintf("$c%d", round%3))}}, nil).Collect()
		}()
		go func() {
			defer wg.Done()
			_ = os.Rename(filepath.Join(r, ".S1"), filepath.Join(r, ".S1-aside"))
			_ = os.Rename(filepath.Join(r, ".S3"), filepath.Join(r, ".S1"))
			_ = os.Rename(filepath.Join(r, ".S1-aside"), filepath.Join(r, ".S3"))
		}()
		wg.Wait()
		dog.Stop()
		c1, c2 = redial(t, s, c1), redial(t, s, c2)
		if c3.Noop().Wait() != nil {
			c3.Close()
			c3 = dial(t, s)
			_, _ = c3.Select("S1", nil).Wait()
		}
	}
	log := srv.Log()
	swapped, lost, reappeared := countLines(log, swappedUnderSession), countLines(log, lostLogLine), countLines(log, reappearedLine)
	t.Logf("Dovecot %s alone, %d rounds of swaps by rename(2): %d swappedUnderSession lines, %d cacheVanished, %d lostLogLine, %d reappearedLine", srv.Version(), rounds, swapped, countLines(log, cacheVanished), lost, reappeared)
	if swapped == 0 && !srv.Version().Is24() {
		// (2.4.1 logged none in 600 rounds, session 8.)
		t.Errorf("Dovecot alone logged no %q in %d rounds of folder swaps by rename(2); log:\n%s", swappedUnderSession, rounds, errorLines(log))
	}
	if reappeared > 0 {
		t.Errorf("Dovecot alone said an expunged message reappeared after swaps of folders with different UIDVALIDITYs (the stress test's premise for never forgiving it is wrong); log:\n%s", errorLines(log))
	}
}

// TestDovecotAloneCopyBackReusesName: one Dovecot, one client, no twinbox.
// COPY of message 2 within Box (the copy gets a new file name, its G field
// naming the original's), MOVE of message 2 out, then COPY of the copy
// within Box: Dovecot names the new copy by its G field, the original's
// file name, which the uidlist no longer lists, so that name is back under
// a new UID. A Dovecot process that still knows the name under UID 2 logs
// "Duplicate file entry ... (uid 2 -> N)" when it reads that: every such
// warning of the stress runs followed a COPY or MOVE into the same
// mailbox, and the stress test no longer does those (and fails on the
// warning).
func TestDovecotAloneCopyBackReusesName(t *testing.T) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Name: "alone"})
	s := &side{name: "X", srv: srv}
	c := dial(t, s)
	if err := c.Create("Box", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, c, "Box", body("m1"))
	appendMsg(t, c, "Box", body("m2"))
	dir := filepath.Join(srv.Root, ".Box")
	before, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	var orig string
	for _, r := range before.Records {
		if r.UID == 2 {
			orig = r.Base()
		}
	}
	if orig == "" {
		t.Fatalf("no UID 2 in Box's uidlist: %+v", before.Records)
	}
	selectBox(t, c, "Box")
	if _, err := c.Copy(imap.UIDSetNum(2), "Box").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Move(imap.UIDSetNum(2), "INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Copy(imap.UIDSetNum(3), "Box").Wait(); err != nil {
		t.Fatal(err)
	}
	after, _, err := maildir.ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range after.Records {
		if r.Base() == orig && r.UID != 2 {
			t.Logf("Dovecot alone listed UID 2's file name %s again under UID %d", orig, r.UID)
			return
		}
	}
	t.Fatalf("Dovecot did not reuse UID 2's file name %s: the premise changed; uidlist %+v", orig, after.Records)
}

// TestMovedAwaySaveLine: a failed save into a folder that the syncs' debug
// output shows a sync moved away (or removed) is recognised, and only
// for that folder (lines from a stress run that failed on it).
func TestMovedAwaySaveLine(t *testing.T) {
	root := "/tmp/twinbox-dovecot-b-2285280941/mail"
	syncLog := `time=2026-11-28T19:34:22.265Z level=DEBUG msg="moved a mailbox directory" from=/tmp/twinbox-dovecot-b-2285280941/mail/.S1.Kid to=/tmp/twinbox-dovecot-b-2285280941/mail/.S3.Kid
time=2026-11-28T19:34:22.300Z level=DEBUG msg="removing a mailbox directory" dir=/tmp/twinbox-dovecot-b-2285280941/mail/.S2
`
	away := movedAway(syncLog, root)
	if !away[".S1.Kid"] || !away[".S2"] || away[".S3.Kid"] {
		t.Fatalf("movedAway = %v", away)
	}
	line := "Nov 28 19:34:22 imap(twinboxtest)<24156><fL9yQ1thKKd/AAAB>: Error: unlink(/tmp/twinbox-dovecot-b-2285280941/mail/.S1.Kid/tmp/1795894462.M264188P24156.vm) failed: No such file or directory (in maildir-save.c:654)"
	if !inherentLine(root, line, away) {
		t.Errorf("not recognised: %s", line)
	}
	if inherentLine(root, strings.ReplaceAll(line, ".S1.Kid", ".Work"), away) {
		t.Errorf("a folder no sync moved was forgiven")
	}
}

// TestDovecotAloneCopyIntoRenamed: one Dovecot, two IMAP clients, no
// twinbox. One client COPYs a message of Work into S1 again and again
// while the other RENAMEs S1 away and back. Dovecot copies by a hard link
// into the destination's tmp/; when the destination directory moved away
// between the COPY's open of it and the link(2), the link fails with
// ENOENT, which Dovecot takes for the SOURCE file having been renamed: it
// resyncs the source mailbox ten times and logs "maildir_file_do(<the
// source file>): Filename keeps changing for UID=<the source UID>" about
// Work, a folder nobody renamed (the COPY answers NO). The stress test
// forgives that line only where this explains it (copyIntoMovedLine).
func TestDovecotAloneCopyIntoRenamed(t *testing.T) {
	dovecot.ForEach(t, testDovecotAloneCopyIntoRenamed)
}

func testDovecotAloneCopyIntoRenamed(t *testing.T, d *dovecot.Install) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2 := dial(t, s), dial(t, s)
	defer func() { c1.Close(); c2.Close() }()
	for _, n := range []string{"Work", "S1"} {
		if err := c2.Create(n, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	appendMsg(t, c2, "Work", body("copied again and again"))
	selectBox(t, c1, "Work")
	found := false
	rounds := 0
	for round := 0; round < 400 && !found; round++ {
		rounds++
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 4 {
				_, _ = c1.Copy(imap.UIDSetNum(1), "S1").Wait()
			}
		}()
		go func() {
			defer wg.Done()
			_ = c2.Rename("S1", "S9", nil).Wait()
			_ = c2.Rename("S9", "S1", nil).Wait()
		}()
		wg.Wait()
		found = findLine(srv.Log(), copyIntoMoved)
		if c2.Noop().Wait() != nil {
			c2.Close()
			c2 = dial(t, s)
		}
		if c1.Noop().Wait() != nil {
			c1.Close()
			c1 = dial(t, s)
			selectBox(t, c1, "Work")
		}
	}
	if !found {
		t.Fatalf("Dovecot alone did not log %q in %d rounds of COPY against RENAME of the destination; log:\n%s", copyIntoMoved, rounds, errorLines(srv.Log()))
	}
	t.Logf("after %d rounds Dovecot alone logged:\n%s", rounds, errorLines(srv.Log()))
}

// copyIntoMoved is Dovecot's line for a COPY or MOVE by hard link whose
// destination folder moved away as the link was made
// (TestDovecotAloneCopyIntoRenamed): it names the source mailbox and file.
var copyIntoMoved = regexp.MustCompile(`: Error: (?:Mailbox (\S+): )?maildir_file_do\((\S+)/cur/[^/)]+\): Filename keeps changing(?: for UID=(\d+))?$`)

// TestCopyIntoMovedLine: the line of a COPY or MOVE into a folder a sync
// moved away is recognised for the source mailbox and UID of a refused
// COPY/MOVE of that side into that folder, once per refusal, and for
// nothing else (lines from the stress run that failed on it, seed
// 1795899477620711080 on 2.4).
func TestCopyIntoMovedLine(t *testing.T) {
	root := "/tmp/twinbox-dovecot-b-343290464/mail"
	syncLog := `time=2026-11-28T20:57:58.852Z level=DEBUG msg="moved a mailbox directory" from=/tmp/twinbox-dovecot-b-343290464/mail/.S2 to=/tmp/twinbox-dovecot-b-343290464/mail/twinbox-tmp-18f4180356400b6be650000083ecc375
`
	away := movedAwayAt(syncLog, root)
	line := "Nov 28 20:57:58 imap(twinboxtest)<20752><xlVzblxhHKh/AAAB>: Error: Mailbox Work: maildir_file_do(/tmp/twinbox-dovecot-b-343290464/mail/.Work/cur/1795899478.M521518P20755Q1.vm,S=163,W=170:2,Sa): Filename keeps changing for UID=12"
	// The client's MOVE of Work UID 12 to S2: 20:57:58.833-.876 (UTC).
	start := time.Date(2026, 11, 28, 20, 57, 58, 833e6, time.UTC)
	end := time.Date(2026, 11, 28, 20, 57, 58, 876e6, time.UTC)
	fail := failedCopy{side: "B", from: "Work", uid: 12, to: "S2", start: start, end: end}
	at := func(f failedCopy, d time.Duration) failedCopy {
		f.start, f.end = f.start.Add(d), f.end.Add(d)
		return f
	}
	for _, c := range []struct {
		what  string
		side  string
		fails []failedCopy
		line  string
		want  bool
	}{
		{"the run's line", "B", []failedCopy{fail}, line, true},
		{"other side", "A", []failedCopy{fail}, line, false},
		{"other UID", "B", []failedCopy{{side: "B", from: "Work", uid: 13, to: "S2", start: start, end: end}}, line, false},
		{"other source", "B", []failedCopy{{side: "B", from: "INBOX", uid: 12, to: "S2", start: start, end: end}}, line, false},
		{"destination no sync moved", "B", []failedCopy{{side: "B", from: "Work", uid: 12, to: "S1", start: start, end: end}}, line, false},
		{"moved long before the command", "B", []failedCopy{at(fail, 5*time.Second)}, line, false},
		{"moved long after the command", "B", []failedCopy{at(fail, -5*time.Second)}, line, false},
		{"no refused COPY", "B", nil, line, false},
		{"INBOX source", "B", []failedCopy{{side: "B", from: "INBOX", uid: 3, to: "S2", start: start, end: end}}, strings.Replace(strings.Replace(strings.Replace(line, "Mailbox Work", "Mailbox INBOX", 1), "/.Work/cur/", "/cur/", 1), "UID=12", "UID=3", 1), true},
	} {
		if got := copyIntoMovedLine(root, c.line, c.side, c.fails, away); got != c.want {
			t.Errorf("%s: copyIntoMovedLine = %v, want %v", c.what, got, c.want)
		}
	}
	fails := []failedCopy{fail}
	if !copyIntoMovedLine(root, line, "B", fails, away) || copyIntoMovedLine(root, line, "B", fails, away) {
		t.Errorf("one refused COPY explains exactly one line")
	}
}

// TestDovecotAloneDeleteDuringRenameLeavesDeletedFolder: one Dovecot, three
// IMAP clients, no twinbox. A client DELETEs S3 while another RENAMEs S3
// to S9 and back. Dovecot's DELETE marks the folder's index deleted, then
// finds the directory gone (renamed): the folder comes back with an index
// that says it was deleted, and from then on Dovecot answers every SELECT,
// APPEND, ... of it with "Mailbox was deleted under us" (CREATE: it
// exists). The long stress met the same state once when a sync renamed a
// folder aside (a name clash) just as a client's DELETE of it ran, then
// moved it back (seed 5184897883453321133 on 2.4: "EXAMINE S3: Mailbox
// was deleted under us" when reading the final view). Not handled by the
// stress yet; this test shows it is Dovecot's own race.
// A second DELETE of such a folder removes it (checked here): that is what
// the stress does with a folder left so by a DELETE that raced a sync's
// move of it (deletedUnderUs).
func TestDovecotAloneDeleteDuringRenameLeavesDeletedFolder(t *testing.T) {
	dovecot.ForEach(t, testDovecotAloneDeleteDuringRenameLeavesDeletedFolder)
}

func testDovecotAloneDeleteDuringRenameLeavesDeletedFolder(t *testing.T, d *dovecot.Install) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2, c3 := dial(t, s), dial(t, s), dial(t, s)
	defer func() { c1.Close(); c2.Close(); c3.Close() }()
	stuck, stuckBox := "", ""
	rounds := 0
	for round := 0; round < 300 && stuck == ""; round++ {
		rounds++
		_ = c1.Create("S3", nil).Wait()
		if err := appendErr(c1, "S3", body(fmt.Sprintf("round %d", round))); err != nil && strings.Contains(err.Error(), "deleted under us") {
			stuck, stuckBox = fmt.Sprintf("APPEND to S3 after the previous round: %v", err), "S3"
			break
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = c1.Delete("S3").Wait() }()
		go func() {
			defer wg.Done()
			_ = c2.Rename("S3", "S9", nil).Wait()
			_ = c2.Rename("S9", "S3", nil).Wait()
		}()
		wg.Wait()
		for _, n := range []string{"S3", "S9"} {
			if _, err := c3.Select(n, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil && strings.Contains(err.Error(), "deleted under us") {
				stuck, stuckBox = fmt.Sprintf("EXAMINE %s: %v", n, err), n
			}
		}
		_ = c1.Delete("S9").Wait()
		c1, c2, c3 = redial(t, s, c1), redial(t, s, c2), redial(t, s, c3)
	}
	if stuck == "" {
		t.Fatalf("Dovecot alone never left a folder deleted under its clients in %d rounds of DELETE against RENAME", rounds)
	}
	t.Logf("round %d: %s", rounds, stuck)
	// What a user then does: DELETE it again. Dovecot finishes the delete
	// it had begun.
	c3 = redial(t, s, c3)
	if err := c3.Delete(stuckBox).Wait(); err != nil {
		t.Fatalf("DELETE %s again: %v", stuckBox, err)
	}
	if _, err := c3.Select(stuckBox, &imap.SelectOptions{ReadOnly: true}).Wait(); err == nil || !strings.Contains(err.Error(), "doesn't exist") {
		t.Fatalf("after DELETE %s again, EXAMINE: %v (want: doesn't exist)", stuckBox, err)
	}
}

// duplicateFileEntry is Dovecot's warning that a uidlist lists one file
// name under two UIDs.
var duplicateFileEntry = regexp.MustCompile(`: Warning: (?:Mailbox \S+: )?(\S+)/dovecot-uidlist: Duplicate file entry at line \d+: (\S+) \(uid \d+ -> \d+\)`)

// TestDovecotAloneCrossFolderDuplicate: one Dovecot, five IMAP clients, no
// twinbox, doing APPENDs, COPYs and MOVEs between INBOX and Work (never
// within one folder) and EXPUNGEs at once: Dovecot logs "Duplicate file
// entry" by itself, 2.3 and 2.4 alike (session 7: 2.3.19.1 within 37 and
// 114 s, 2.4.1 within 13 s). A message copied or moved into a folder whose
// uidlist still lists its name (its expunged first copy's record) is saved
// under that name again at a new UID, and the next reader warns. The
// stress test's three such warnings in sessions 6 and 7 (two on 2.3, one on
// 2.4) followed this pattern: session 7's kept logs show the name made,
// copied, moved out and copied or moved back by Dovecot clients, with no
// twinbox write to those files. The stress test forgives the warning;
// twinbox's own part (keeping an expunged or renumbered message's record,
// never giving an add a listed name) is tested directly
// (TestCopyBackAfterSyncedExpungeGetsANewName, TestRenumberGivesTheFileANewName).
// Long mode only: it can take minutes.
func TestDovecotAloneCrossFolderDuplicate(t *testing.T) {
	if !longMode() {
		t.Skip("long mode (TWINBOX_LONG=1): Dovecot needs up to minutes of racing clients")
	}
	dovecot.ForEach(t, testDovecotAloneCrossFolderDuplicate)
}

func testDovecotAloneCrossFolderDuplicate(t *testing.T, d *dovecot.Install) {
	deadline := time.Now().Add(4 * time.Minute)
	for round := 0; time.Now().Before(deadline); round++ {
		srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: fmt.Sprintf("alone%d", round)})
		if found := crossFolderRound(t, &side{name: "X", srv: srv}, uint64(round)); found != "" {
			t.Logf("round %d: Dovecot alone logged:\n%s", round, found)
			return
		}
		srv.Stop()
	}
	t.Errorf("Dovecot alone logged no Duplicate file entry in 4 minutes: the stress test's forgiveness of it has lost its premise")
}

// crossFolderRound runs five clients of random cross-folder operations on
// s and returns Dovecot's Duplicate file entry lines, if any.
func crossFolderRound(t *testing.T, s *side, seed uint64) string {
	c0 := dial(t, s)
	if err := c0.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for ci := range 5 {
		c := dial(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := newRand(seed*16 + uint64(ci))
			pick := func(box string) imap.UID {
				sel, err := c.Select(box, nil).Wait()
				if err != nil || sel.NumMessages == 0 {
					return 0
				}
				seq := uint32(rnd.IntN(int(sel.NumMessages))) + 1
				msgs, err := c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{UID: true}).Collect()
				if err != nil || len(msgs) == 0 {
					return 0
				}
				return msgs[0].UID
			}
			for step := range 60 {
				box, other := "INBOX", "Work"
				if rnd.IntN(2) == 0 {
					box, other = other, box
				}
				switch n := rnd.IntN(100); {
				case n < 35:
					_ = appendErr(c, box, body(fmt.Sprintf("alone %d %d %d", seed, ci, step)))
				case n < 55:
					if u := pick(box); u != 0 {
						_, _ = c.Copy(imap.UIDSetNum(u), other).Wait()
					}
				case n < 80:
					if u := pick(box); u != 0 {
						_, _ = c.Move(imap.UIDSetNum(u), other).Wait()
					}
				default:
					if u := pick(box); u != 0 {
						if _, err := c.Store(imap.UIDSetNum(u), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err == nil {
							_, _ = c.UIDExpunge(imap.UIDSetNum(u)).Collect()
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	var lines []string
	for _, l := range strings.Split(s.srv.Log(), "\n") {
		if duplicateFileEntry.MatchString(l) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestDuplicateFileEntryLine: both versions' forms of the warning match
// (2.4 puts "Mailbox <name>: " before the path).
func TestDuplicateFileEntryLine(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{"Nov 29 02:57:35 imap(twinboxtest)<20301><CQx6dGFhHuF/AAAB>: Warning: /tmp/b/mail/.Work/dovecot-uidlist: Duplicate file entry at line 19: 1795921054.M252445P20301.vm,S=163,W=170 (uid 3 -> 23)", true},
		{"Nov 29 03:01:12 imap(twinboxtest)<2714><iVZsgWFh5ql/AAAB>: Warning: Mailbox INBOX: /tmp/a/mail/dovecot-uidlist: Duplicate file entry at line 9: 1795921271.M730525P2757.vm,S=163,W=170 (uid 4 -> 13)", true},
		{"Nov 29 03:01:12 imap(twinboxtest)<2714><iVZsgWFh5ql/AAAB>: Warning: Mailbox INBOX: /tmp/a/mail/dovecot-uidlist: Expunged message reappeared, giving a new UID", false},
	} {
		if got := duplicateFileEntry.MatchString(c.line); got != c.want {
			t.Errorf("duplicateFileEntry.MatchString(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}
