package imap

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// saveRenameSwapped is what Dovecot logs when it moves a message it saved
// into a folder's tmp/ on to new/ (cur/, for a message saved with flags:
// 2.3 long seed 1795954259770413458) by the folder's path, and another folder
// is at that path by then (the one it wrote into was moved away): the
// groups are the two directories.
var saveRenameSwapped = regexp.MustCompile(`: Error: Mailbox \S+: rename\((\S+)/tmp/[^/)]+, (\S+)/(?:new|cur)/[^/)]+\) failed: No such file or directory$`)

// TestDovecotAloneSaveIntoFolderSwapped: one Dovecot, no twinbox. A client
// APPENDs a message to S2; halfway through the literal (Dovecot has begun
// the file in .S2/tmp/) a plain process moves .S2 aside and S3 in at .S2,
// as a sync does when it renames one of two folders that took one name
// aside and moves the other in (or replicates the other side's RENAMEs).
// Dovecot 2.3 then renames tmp/ to new/ by the path .S2, finds no such
// file there, and logs saveRenameSwapped (and the unlink of that tmp/ file,
// inherentSaveIntoDeleted); the APPEND fails (required). Dovecot 2.4 logs
// the same now and then (2 of 3 runs, session 10) and otherwise answers
// "Mailbox was deleted under us" and logs only the unlink. (S3's
// transaction log is made to run ahead of S2's first: with equal
// sequences Dovecot notices the swap at its index, swappedUnderSession.)
// The stress test forgives the line only for a folder a sync moved away or
// removed (inherentLine; 2.3 long seed 1795949580628098761: B's APPEND to
// S2 as a sync moved S2 aside to S2-f0613136 and another S2 in).
func TestDovecotAloneSaveIntoFolderSwapped(t *testing.T) {
	dovecot.ForEach(t, testDovecotAloneSaveIntoFolderSwapped)
}

func testDovecotAloneSaveIntoFolderSwapped(t *testing.T, d *dovecot.Install) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c := dial(t, s)
	defer func() { c.Close() }()
	for _, n := range []string{"S2", "S3"} {
		if err := c.Create(n, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		appendMsg(t, c, n, body(n))
	}
	r := srv.Root
	// S3's transaction log at a higher sequence than S2's (two index
	// resets, as two merges' UIDVALIDITY changes make): with equal ones
	// Dovecot notices the swap at its index first ("duplicate transaction
	// log sequence", swappedUnderSession) and never gets to the rename.
	for range 2 {
		if !setUIDValidity(t, filepath.Join(r, ".S3"), freshUIDValidity()) {
			t.Fatal("S3's uidlist lock is taken")
		}
		selectBox(t, c, "S3")
		if err := c.Unselect().Wait(); err != nil {
			t.Fatal(err)
		}
	}
	msg := append(body("big"), bytes.Repeat([]byte("x"), 1<<20)...)
	cmd := c.Append("S2", int64(len(msg)), nil) // (no INTERNALDATE: no utime() of the tmp/ file by its path)
	half := len(msg) / 2
	if _, err := cmd.Write(msg[:half]); err != nil {
		t.Fatal(err)
	}
	// Until Dovecot has its file in .S2/tmp/ (bounded: 5 s).
	tmpDir := filepath.Join(r, ".S2", "tmp")
	for i := 0; i < 500; i++ {
		if es, _ := os.ReadDir(tmpDir); len(es) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if es, _ := os.ReadDir(tmpDir); len(es) == 0 {
		t.Fatal("Dovecot wrote nothing into .S2/tmp/ within 5 s")
	}
	for _, mv := range [][2]string{{".S2", ".S2-aside"}, {".S3", ".S2"}} {
		if err := os.Rename(filepath.Join(r, mv[0]), filepath.Join(r, mv[1])); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = cmd.Write(msg[half:])
	_ = cmd.Close()
	_, aerr := cmd.Wait()
	if aerr == nil {
		t.Fatal("the APPEND into the folder swapped under it succeeded")
	}
	if srv.Version().Is24() {
		// 2.4 logs the line now and then; otherwise it notices first
		// that the folder at the path is not the one it opened ("Mailbox
		// was deleted under us") and logs only the unlink.
		time.Sleep(200 * time.Millisecond)
		t.Logf("Dovecot %s alone, APPEND into a folder swapped under it: %v; %d saveRenameSwapped; logged:\n%s", srv.Version(), aerr, countLines(srv.Log(), saveRenameSwapped), errorLines(srv.Log()))
		return
	}
	got := waitLine(srv, saveRenameSwapped)
	t.Logf("Dovecot %s alone, APPEND into a folder swapped under it: %v; logged:\n%s", srv.Version(), aerr, errorLines(srv.Log()))
	if !got {
		t.Fatalf("Dovecot alone logged no %q", saveRenameSwapped)
	}
	m := saveRenameSwapped.FindStringSubmatch(lastLine(srv.Log(), saveRenameSwapped))
	if m[1] != filepath.Join(r, ".S2") || m[2] != filepath.Join(r, ".S2") {
		t.Errorf("the line names %s and %s, want .S2 twice", m[1], m[2])
	}
}

func TestSaveRenameSwappedLine(t *testing.T) {
	const root = "/tmp/twinbox-dovecot-b-3051041295/mail"
	for line, want := range map[string]bool{
		// The stress's two (2.3): into new/, and into cur/ with flags.
		"Nov 29 10:53:03 imap(twinboxtest)<17876><LLPUGGhhSrF/AAAB>: Error: Mailbox S2: rename(" + root + "/.S2/tmp/1795949583.M132242P17876.vm, " + root + "/.S2/new/1795949583.M132242P17876.vm,S=166,W=173) failed: No such file or directory":   true,
		"Nov 29 12:11:04 imap(twinboxtest)<16546><vwu3L2lhIOx/AAAB>: Error: Mailbox S1: rename(" + root + "/.S1/tmp/1795954264.M26880P16546.vm, " + root + "/.S1/cur/1795954264.M26880P16546.vm,S=169,W=176:2,S) failed: No such file or directory": true,
		// Not a save's move, or another error.
		"Nov 29 12:11:04 imap(twinboxtest)<16546><vwu3L2lhIOx/AAAB>: Error: Mailbox S1: rename(" + root + "/.S1/cur/a, " + root + "/.S1/cur/b) failed: No such file or directory": false,
		"Nov 29 12:11:04 imap(twinboxtest)<16546><vwu3L2lhIOx/AAAB>: Error: Mailbox S1: rename(" + root + "/.S1/tmp/a, " + root + "/.S1/cur/a:2,S) failed: Permission denied":     false,
	} {
		gone := map[string]bool{".S1": true, ".S2": true}
		if got := inherentLine(root, line, gone); got != want {
			t.Errorf("inherentLine(%q) = %v, want %v", line, got, want)
		}
		if want && inherentLine(root, line, map[string]bool{".S3": true}) {
			t.Errorf("forgiven without a sync's move of its folder: %q", line)
		}
	}
}
