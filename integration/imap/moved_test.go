package imap

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/maildir"
)

// What a Dovecot process logs when the folder whose first transaction log
// it is creating moves away in the middle: it wrote the new log under the
// dotlock dovecot.index.log.newlock (lib-index mail-transaction-log-file.c,
// mail_transaction_log_file_create) and its rename of the lock over
// dovecot.index.log finds neither at the old path (lib file-dotlock.c,
// file_dotlock_replace). 2.3 and 2.4 write the same text. The group is the
// folder's directory.
var (
	newlockRenameVanished = regexp.MustCompile(`: Error: rename\((\S+)/dovecot\.index\.log\.newlock, (\S+)/dovecot\.index\.log\) failed: No such file or directory$`)
	newlockDeleted        = regexp.MustCompile(`: Warning: Our dotlock file (\S+)/dovecot\.index\.log\.newlock was deleted \(`)
)

// TestDovecotAloneFolderMovedWhileLogCreated: one Dovecot, no twinbox. A
// client CREATEs a folder (Dovecot makes the directory, then its first
// transaction log under the dotlock dovecot.index.log.newlock) while a
// plain process renames the folder's directory by rename(2) as soon as the
// lock appears: what another Dovecot process's RENAME of the folder does
// (a rename(2) of the directory; Dovecot's RENAME takes no lock that the
// log's creation respects), and what a sync replicating the other side's
// RENAME or DELETE does to a folder a Dovecot process is indexing for the
// first time (twinbox makes folders without an index). Dovecot logs
// newlockRenameVanished and newlockDeleted about the folder's old
// directory (required; session 10: 2.3.19.1 46 of 50 rounds, 2.4.1 46 of
// 50). The same rounds without the rename log neither (required: 0 of 10),
// and neither do rounds whose rename(2) holds the newlock as twinbox's
// moves do (maildir.LockIndexLogCreation, taken as soon as the folder's
// maildirfolder file exists; required: 0, with moves; session 10: 20 of 20
// moved, no line and no other error on either version): Dovecot waits for
// the lock and then finds the folder gone without a word.
// With TWINBOX_LONG=1 it also races the CREATE with a second IMAP
// session's RENAME of the folder (no plain process at all) and reports the
// count (session 10: 2.3.19.1 1 of 50 rounds, 2.4.1 6 of 50): not
// required, it is rarer. The lock Dovecot could not rename stays in the
// moved folder, and the next process that indexes that folder waits for it
// for three minutes holding the mailbox list's lock (the whole user
// stalls: "file_dotlock_open() failed with file .../dovecot.index.log:
// Resource temporarily unavailable", "dovecot.list.index.log was locked for
// 180 seconds"); the test removes it after each round. The stress test
// forgives the two lines only for a scratch folder's directory that a sync
// moved away or removed, or a client of that side renamed away, within a
// second of the line (newlockMovedLine): twinbox's moves hold the lock
// since session 10, so it is left for the lines of a client's RENAME on
// that side and of older binaries.
func TestDovecotAloneFolderMovedWhileLogCreated(t *testing.T) {
	dovecot.ForEach(t, testDovecotAloneFolderMovedWhileLogCreated)
}

func testDovecotAloneFolderMovedWhileLogCreated(t *testing.T, d *dovecot.Install) {
	moved, lines := logCreationRaces(t, d, "rename(2)", 20)
	if lines == 0 {
		t.Errorf("Dovecot %s alone logged no %q in 20 CREATEs whose folder a plain rename(2) moved in %d", d, newlockRenameVanished, moved)
	}
	if _, lines := logCreationRaces(t, d, "none", 10); lines != 0 {
		t.Errorf("Dovecot %s alone logged %d newlock lines in 10 CREATEs with no move: newlockMovedLine's condition is wrong", d, lines)
	}
	if moved, lines := logCreationRaces(t, d, "rename(2) under the newlock", 20); moved == 0 || lines != 0 {
		t.Errorf("Dovecot %s, 20 CREATEs raced by a rename(2) under twinbox's newlock: moved %d, %d newlock lines; want some moves and no line", d, moved, lines)
	}
	if longMode() {
		logCreationRaces(t, d, "IMAP RENAME", 50)
	}
}

// logCreationRaces runs rounds CREATEs of a new folder M<i> on a new
// Dovecot, each raced by a move of the folder to N<i> (how: "rename(2)",
// by a plain process as soon as Dovecot's newlock is in the folder; "IMAP
// RENAME", by a second session sending RENAME until it succeeds; "none":
// no move). It returns in how many rounds the folder moved and how many
// newlock lines (either kind) Dovecot logged; it fails the test if a line
// names another directory than a moved folder's old one, or if a
// newlockRenameVanished line comes without its newlockDeleted.
func logCreationRaces(t *testing.T, d *dovecot.Install, how string, rounds int) (moved, lines int) {
	srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
	s := &side{name: "X", srv: srv}
	c1, c2 := dial(t, s), dial(t, s)
	defer func() { c1.Close(); c2.Close() }()
	r := srv.Root
	movedDirs := map[string]bool{}
	for round := 0; round < rounds; round++ {
		from, to := fmt.Sprintf("M%d", round), fmt.Sprintf("N%d", round)
		var created atomic.Bool
		done := make(chan bool, 1)
		go func() {
			// Bounded: 2 s, or until the CREATE is answered.
			end := time.Now().Add(2 * time.Second)
			for how != "none" && time.Now().Before(end) && !created.Load() {
				if how == "rename(2)" {
					if _, err := os.Lstat(filepath.Join(r, "."+from, "dovecot.index.log.newlock")); err == nil {
						done <- os.Rename(filepath.Join(r, "."+from), filepath.Join(r, "."+to)) == nil
						return
					}
					continue
				}
				if how == "rename(2) under the newlock" {
					dir := filepath.Join(r, "."+from)
					if _, err := os.Lstat(filepath.Join(dir, "maildirfolder")); err != nil {
						continue
					}
					nl, err := maildir.LockIndexLogCreation(context.Background(), dir, time.Second)
					if err != nil {
						t.Errorf("taking %s's newlock: %v", from, err)
						done <- false
						return
					}
					err = os.Rename(dir, filepath.Join(r, "."+to))
					if err == nil {
						nl.Moved(filepath.Join(r, "."+to))
					}
					_ = nl.Unlock()
					done <- err == nil
					return
				}
				if c2.Rename(from, to, nil).Wait() == nil {
					done <- true
					return
				}
			}
			done <- false
		}()
		cc1, cc2 := c1, c2
		dog := time.AfterFunc(10*time.Second, func() { cc1.Close(); cc2.Close() })
		err := c1.Create(from, nil).Wait()
		created.Store(true)
		if <-done {
			moved++
			movedDirs[filepath.Join(r, "."+from)] = true
		}
		dog.Stop()
		if err != nil && how == "none" {
			t.Errorf("CREATE %s: %v", from, err)
		}
		if err != nil && round < 3 {
			t.Logf("%s: CREATE %s: %v", how, from, err)
		}
		// The lock Dovecot could not rename moved with the folder, and
		// the next process to index the folder would wait for it for
		// three minutes holding the list's lock.
		_ = os.Remove(filepath.Join(r, "."+to, "dovecot.index.log.newlock"))
		c1, c2 = redial(t, s, c1), redial(t, s, c2)
	}
	if moved > 0 {
		waitLine(srv, newlockDeleted) // the log process writes a moment later
	}
	log := srv.Log()
	vanished, deleted := countLines(log, newlockRenameVanished), countLines(log, newlockDeleted)
	for _, re := range []*regexp.Regexp{newlockRenameVanished, newlockDeleted} {
		for _, m := range re.FindAllStringSubmatch(log, -1) {
			if !movedDirs[m[1]] {
				t.Errorf("Dovecot %s alone, %s: a newlock line about %s, which did not move:\n%s", srv.Version(), how, m[1], m[0])
			}
		}
	}
	if vanished > deleted {
		t.Errorf("Dovecot %s alone, %s: %d %q but %d %q", srv.Version(), how, vanished, newlockRenameVanished, deleted, newlockDeleted)
	}
	others := ""
	if how != "rename(2)" {
		others = "; the log's errors and warnings:\n" + errorLines(log)
	}
	t.Logf("Dovecot %s alone, %s: %d CREATEs, the folder moved in %d, %d newlockRenameVanished, %d newlockDeleted%s", srv.Version(), how, rounds, moved, vanished, deleted, others)
	return moved, vanished + deleted
}
