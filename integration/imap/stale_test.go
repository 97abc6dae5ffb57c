package imap

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// Dovecot's maildir sync (maildir-sync.c, maildir_sync_quick_check) decides
// whether to look at a folder again from the mtimes of its new/ and cur/
// alone, compared with the ones its index recorded (seconds and
// nanoseconds, maildir extension header). Only when one of them changed, or
// when its last look was within a second of a directory's mtime (the
// "delayed refresh" for changes in the same tick), does it take the uidlist
// lock and read dovecot-uidlist again; SELECT otherwise answers from the
// index, UIDVALIDITY included. So a uidlist rewritten in place under a new
// UIDVALIDITY, with nothing renamed in cur/ or new/, stays unseen by a
// Dovecot whose index of the folder is settled (its last look two seconds
// or more after the directories' last change). Stress seed
// 1795941362355669999 (2.3, long mode): A's Dovecot kept showing the empty
// folder S2/Kid-90aa5439 at 1795941379 after the syncs gave its mailbox
// 1795941391 (restored where its directory had vanished). A's directory of
// it was made at 08:36:08.96 (the mtimes of cur/ and new/ at the end); the
// index in it (dovecot.index.log, doveadm dump) recorded those mtimes and a
// last look at 08:36:10, two seconds later, so no delayed refresh was due;
// sync run 17 rewrote the uidlist in place at 08:36:14.14 (51 bytes, as
// before); run 24 then moved the directory to S2/Kid-90aa5439 by rename(2),
// which changes neither mtime. Nothing in cur/ or new/ changed after.
//
// The ops case rm-rf-of-an-empty-folder did not show it: its views are read
// within a second of the sync that makes the folder, and Dovecot's delayed
// refresh then reads the folder again at the next SELECT.

// settleDovecotLook waits (bounded, no assertion on the time) until the
// clock is two whole seconds past the mtimes of cur/ and new/ of every
// folder dir, so that a Dovecot looking at them next records a look from
// after its delayed-refresh window: its index of them is then settled, as a
// long-running server's is.
func settleDovecotLook(t *testing.T, dirs ...string) {
	t.Helper()
	var last int64
	for _, d := range dirs {
		for _, sub := range []string{"cur", "new"} {
			st, err := os.Stat(filepath.Join(d, sub))
			if err != nil {
				t.Fatal(err)
			}
			last = max(last, st.ModTime().Unix())
		}
	}
	for i := 0; time.Now().Unix() < last+2; i++ {
		if i >= 100 {
			t.Fatalf("the clock did not pass %d within 5 s", last+2)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// examineUIDValidity answers the UIDVALIDITY a new IMAP session's EXAMINE
// of mailbox shows on side s.
func examineUIDValidity(t *testing.T, s *side, mailbox string) uint32 {
	t.Helper()
	c := dial(t, s)
	defer func() { _ = c.Logout().Wait() }()
	d, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("%s: EXAMINE %q: %v", s.name, mailbox, err)
	}
	return d.UIDValidity
}

// TestDovecotAloneSettledIndexIgnoresUidlist: one Dovecot, no twinbox. A
// plain process rewrites a folder's uidlist under a new UIDVALIDITY (as a
// sync does to the replica that kept a folder the other lost) after Dovecot
// settled its index of the folder. A new session's EXAMINE still shows the
// old value; once cur/'s mtime changes (here: set to now), the next EXAMINE
// shows the new one and Dovecot logs "UIDVALIDITY changed". This is why
// twinbox moves cur/'s mtime when it gives a folder a new UIDVALIDITY in
// place (index/applybox.go).
func TestDovecotAloneSettledIndexIgnoresUidlist(t *testing.T) {
	dovecot.ForEach(t, func(t *testing.T, d *dovecot.Install) {
		for _, withMsg := range []bool{false, true} {
			t.Run(fmt.Sprintf("message=%v", withMsg), func(t *testing.T) {
				s := &side{name: "A", srv: dovecot.StartServer(t, dovecot.ServerOptions{Name: "a", Dovecot: d})}
				c := dial(t, s)
				if err := c.Create("Stale", nil).Wait(); err != nil {
					t.Fatal(err)
				}
				if withMsg {
					appendMsg(t, c, "Stale", body("stale"), imap.FlagSeen)
				}
				_ = c.Logout().Wait()
				dir := filepath.Join(s.root(), ".Stale")
				settleDovecotLook(t, dir)
				old := examineUIDValidity(t, s, "Stale") // Dovecot's settled look
				v := freshUIDValidity()
				if !setUIDValidityNudge(t, dir, v, false) {
					t.Fatal("uidlist lock not free")
				}
				if got := examineUIDValidity(t, s, "Stale"); got != old {
					t.Fatalf("EXAMINE after the uidlist rewrite shows %d (old %d, uidlist %d): Dovecot read the uidlist without a change in cur/ or new/", got, old, v)
				}
				now := time.Now()
				if err := os.Chtimes(filepath.Join(dir, "cur"), time.Time{}, now); err != nil {
					t.Fatal(err)
				}
				if got := examineUIDValidity(t, s, "Stale"); got != v {
					t.Fatalf("EXAMINE after cur/'s mtime moved shows %d, want the uidlist's %d (old %d)", got, v, old)
				}
				if n := countLines(s.srv.Log(), uidValidityChanged); n == 0 {
					t.Errorf("no \"UIDVALIDITY changed\" line in Dovecot's log:\n%s", s.srv.Log())
				}
				t.Logf("Dovecot %s: EXAMINE showed %d after the rewrite to %d, and %d after cur/'s mtime moved", s.srv.Version(), old, v, v)
			})
		}
	})
}

// TestNewUIDValidityInPlaceSettledIndex: a folder is settled in both
// Dovecots' indexes, then the syncs give it a new UIDVALIDITY and rewrite one
// side's uidlist in place, renaming no file there; that side's Dovecot must
// show the new value and the messages at their new UIDs too (seed
// 1795941362355669999). Cases: the folder (empty, or with a message) vanished
// on B without a recorded delete (rm -rf) and is restored there, A keeping
// its directory; and an empty folder CREATEd on both sides before a sync,
// merged (one side takes the other's UIDVALIDITY, contract 3.4); and A's
// uidlist lost, restored by A's scan from twinbox's index under a new value.
// (A merge that adds a message to the side that takes the new value renames
// into its cur/ and needs no help.) The first three fail without the cur/
// mtime nudge in index/applybox.go (maildir.NudgeDovecot): the side that
// kept its directory shows the old UIDVALIDITY (and, with a message, the
// message at its old UID with an empty body); uidlist-lost fails without
// the one in index/scan.go (establishUidlist): A's FETCH makes Dovecot
// resync mid-session and end it ("dovecot.index reset, view is now
// inconsistent").
func TestNewUIDValidityInPlaceSettledIndex(t *testing.T) {
	dovecot.ForEach(t, func(t *testing.T, d *dovecot.Install) {
		for _, c := range []struct {
			name                   string
			merge, withMsg, lostUL bool
		}{
			{name: "rm-rf-empty"},
			{name: "rm-rf-with-a-message", withMsg: true},
			{name: "merged-empty", merge: true},
			{name: "uidlist-lost", withMsg: true, lostUL: true},
		} {
			t.Run(c.name, func(t *testing.T) {
				p := newPair(t, dovecot.ServerOptions{Dovecot: d})
				// A's INBOX first, made on B by the syncs: B's Dovecot does
				// not make another one to merge.
				_ = dial(t, p.a).Logout().Wait()
				p.settle(t)
				makers := []*side{p.a}
				if c.merge {
					makers = append(makers, p.b)
				}
				for i, s := range makers {
					cl := dial(t, s)
					if i > 0 {
						// B's Dovecot takes one more value from its counter
						// (which the syncs raised to A's) first, so that its
						// Stale has another UIDVALIDITY than A's.
						if err := cl.Create("Bump", nil).Wait(); err != nil {
							t.Fatal(err)
						}
					}
					if err := cl.Create("Stale", nil).Wait(); err != nil {
						t.Fatal(err)
					}
					if c.withMsg {
						appendMsg(t, cl, "Stale", body("stale "+c.name), imap.FlagSeen)
					}
					_ = cl.Logout().Wait()
				}
				if !c.merge {
					p.settle(t)
					p.requireSame(t)
				}
				// Both Dovecots look again after their delayed-refresh
				// window: their indexes of the folder are settled.
				settleDovecotLook(t, filepath.Join(p.a.root(), ".Stale"), filepath.Join(p.b.root(), ".Stale"))
				old := map[string]uint32{}
				for _, s := range p.sides() {
					old[s.name] = readView(t, s).Boxes["Stale"].UIDValidity
				}
				if c.merge && old["A"] == old["B"] {
					t.Fatalf("both Dovecots gave the folder UIDVALIDITY %d: nothing to merge", old["A"])
				}
				switch {
				case c.lostUL:
					// A loses the folder's uidlist (Dovecot's index stays).
					if err := os.Remove(filepath.Join(p.a.root(), ".Stale", "dovecot-uidlist")); err != nil {
						t.Fatal(err)
					}
				case !c.merge:
					// rm -rf on B; A keeps its folder (and its Dovecot index).
					if err := os.RemoveAll(filepath.Join(p.b.root(), ".Stale")); err != nil {
						t.Fatal(err)
					}
				}
				p.settle(t)
				va, _ := p.requireSame(t) // the merged folder's UIDVALIDITY changed on one side
				got := va.Boxes["Stale"]
				if got == nil {
					t.Fatal("folder Stale gone")
				}
				if !c.merge && got.UIDValidity <= old["A"] {
					t.Errorf("folder Stale after the restore: UIDVALIDITY %d, want above %d", got.UIDValidity, old["A"])
				}
				want := 0
				if c.withMsg {
					want = 1
				}
				if len(got.Msgs) != want {
					t.Errorf("folder Stale: %v, want %d messages", got.Msgs, want)
				}
				p.checkLogsRevalidated(t, map[string]bool{".Stale": true})
				t.Logf("Dovecot %s: UIDVALIDITY A %d, B %d before; %d after on both sides", p.a.srv.Version(), old["A"], old["B"], got.UIDValidity)
			})
		}
	})
}

// TestDovecotAloneDeleteAnsweredNonexistentLeavesMark: one Dovecot, two
// IMAP clients, no twinbox. A client DELETEs an empty folder while a plain
// process moves its directory through a temporary name (not a folder) to
// another folder's name, as a sync's chain of renames does (the stress's
// B moved .S2 to twinbox-tmp-<guid> and 29 ms later to .S1 during B's
// DELETE S2, long seed 1795960670165506788 on 2.3). Dovecot may answer the
// DELETE "Mailbox doesn't exist" (the directory gone when it went to remove
// it) with the folder's index already marked deleted: the folder at the
// other name is then "deleted under us" to every client, as after a DELETE
// answered "deleted under us". Measured while writing this: 12 and 10 such
// rounds of 200 (2.3, 2.4).
func TestDovecotAloneDeleteAnsweredNonexistentLeavesMark(t *testing.T) {
	dovecot.ForEach(t, func(t *testing.T, d *dovecot.Install) {
		s := &side{name: "X", srv: dovecot.StartServer(t, dovecot.ServerOptions{Name: "alone", Dovecot: d})}
		c, c2 := dial(t, s), dial(t, s)
		dir, hid, aside := filepath.Join(s.root(), ".S1"), filepath.Join(s.root(), "tmp-away"), filepath.Join(s.root(), ".S3")
		rounds, found, start := 0, false, time.Now()
		for ; rounds < 600 && time.Since(start) < 90*time.Second && !found; rounds++ {
			if err := c.Create("S1", nil).Wait(); err != nil {
				t.Fatalf("round %d: CREATE S1: %v", rounds, err)
			}
			done := make(chan error, 1)
			go func() { done <- c.Delete("S1").Wait() }()
			aimAtDelete(dir, done, rounds, []int{0, 1, 2, 3, 4, 5, -1, -1})
			moved := os.Rename(dir, hid) == nil
			if moved {
				time.Sleep(time.Duration(rand.IntN(30000)) * time.Microsecond)
				if err := os.Rename(hid, aside); err != nil {
					t.Fatal(err)
				}
			}
			err := <-done
			c = redial(t, s, c)
			if !moved {
				continue
			}
			// A uidlist lock the DELETE held moved with the directory
			// (see TestDovecotAloneRedeleteWithinRetrySecs).
			if err := os.Remove(filepath.Join(aside, "dovecot-uidlist.lock")); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			_, exErr := c2.Select("S3", &imap.SelectOptions{ReadOnly: true}).Wait()
			c2 = redial(t, s, c2)
			if err != nil && strings.Contains(err.Error(), "Mailbox doesn't exist") && exErr != nil && strings.Contains(exErr.Error(), deletedUnderUs) {
				found = true
				t.Logf("round %d: DELETE S1: %v; EXAMINE S3: %v", rounds, err, exErr)
			}
			// Away with it (its index log set back, so that a DELETE
			// undeletes and removes a marked one; else a plain removal).
			old := time.Now().Add(-(deleteRetrySecs + 10) * time.Second)
			_ = os.Chtimes(filepath.Join(aside, "dovecot.index.log"), old, old)
			if err := c2.Delete("S3").Wait(); err != nil {
				c2 = redial(t, s, c2)
			}
			if err := os.RemoveAll(aside); err != nil {
				t.Fatal(err)
			}
		}
		if !found {
			t.Fatalf("Dovecot %s alone never answered a DELETE \"Mailbox doesn't exist\" with the folder's index marked deleted in %d rounds", s.srv.Version(), rounds)
		}
	})
}

// aimAtDelete waits for the moment of round's move against a DELETE of
// the folder in dir whose answer done gets: plan[round%len(plan)] is the
// number of changes of the folder's index log to let pass first
// (renameAfterLogWrite), or -1 for a random sleep of up to 3 ms.
func aimAtDelete(dir string, done chan error, round int, plan []int) {
	if skip := plan[round%len(plan)]; skip >= 0 {
		renameAfterLogWrite(dir, done, skip)
		return
	}
	time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
}

// renameAfterLogWrite returns when dir's dovecot.index.log has changed
// (size or mtime) skip+1 times since the call, or at once when done has an
// answer (it puts the answer back): the moments just after a DELETE's
// writes to the folder's index, where the stress's syncs met it. A random
// sleep of up to 3 ms alone missed the window 100 times in a row in a CI
// run (2.4, beside the other test packages) and hits it within 7 rounds on
// an idle machine; after the 4th or 5th change of the log (skip 3 or 4)
// the rename hit it in the first round in 12 of 12 runs (6 each, 2.3 and
// 2.4, idle), after the 1st or 2nd in rounds 6 to 370.
func renameAfterLogWrite(dir string, done chan error, skip int) {
	logPath := filepath.Join(dir, "dovecot.index.log")
	key := func() [2]int64 {
		st, err := os.Stat(logPath)
		if err != nil {
			return [2]int64{-1, 0}
		}
		return [2]int64{st.Size(), st.ModTime().UnixNano()}
	}
	last := key()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return
		default:
		}
		if k := key(); k != last {
			if skip == 0 {
				return
			}
			skip--
			last = k
		}
	}
}

// deleteRetrySecs is Dovecot's MAILBOX_DELETE_RETRY_SECS (mail-storage.c,
// 2.3 and 2.4): a mailbox whose index says it is being deleted is undeleted
// by the next read-write open only once its dovecot.index.log has not
// changed for that long.
const deleteRetrySecs = 30

// TestDovecotAloneRedeleteWithinRetrySecs: one Dovecot, two IMAP clients, no
// twinbox. A client DELETEs an empty folder while a plain process renames
// its directory aside (as a sync replicating a RENAME, or moving a folder
// aside for a name clash, may): Dovecot's DELETE marks the folder's index
// deleted (an index-deleted record in dovecot.index.log), then finds the
// directory gone and answers "Mailbox was deleted under us". The folder at
// the other name keeps that index: EXAMINE answers "deleted under us"
// (read-only, it never undeletes), and a DELETE of it is refused with
// "Mailbox exists" as long as its dovecot.index.log is younger than
// MAILBOX_DELETE_RETRY_SECS (30 s): mailbox_open undeletes such an index
// only after that (mailbox_try_undelete), and a mailbox it could not open is
// deleted as a \Noselect one, which Maildir++ refuses for an existing
// directory (maildir_list_delete_dir). Once the log is older (here its
// mtime is set back; with TWINBOX_LONG=1 the test waits the 30 s), the same
// DELETE removes the folder. This is the stress's class (a): its second
// DELETE of such a folder came within seconds of the first, and a fresh
// Dovecot on a cp -a copy, minutes later, deleted it at once (the copy kept
// the log's old mtime).
func TestDovecotAloneRedeleteWithinRetrySecs(t *testing.T) {
	dovecot.ForEach(t, func(t *testing.T, d *dovecot.Install) {
		s := &side{name: "X", srv: dovecot.StartServer(t, dovecot.ServerOptions{Name: "alone", Dovecot: d})}
		c, c2 := dial(t, s), dial(t, s)
		dir, aside := filepath.Join(s.root(), ".S1"), filepath.Join(s.root(), ".S1-aside")
		rounds, first, start := 0, "", time.Now()
		for ; rounds < 400 && time.Since(start) < 40*time.Second && first == ""; rounds++ {
			if err := c.Create("S1", nil).Wait(); err != nil {
				t.Fatalf("round %d: CREATE S1: %v", rounds, err)
			}
			done := make(chan error, 1)
			go func() { done <- c.Delete("S1").Wait() }()
			// Aim at the window: the DELETE's mark is a write to the
			// folder's index log, and the directory goes soon after.
			aimAtDelete(dir, done, rounds, []int{3, 4, 2, -1})
			renamed := os.Rename(dir, aside) == nil
			err := <-done
			c = redial(t, s, c)
			if !renamed {
				continue
			}
			// A uidlist lock the DELETE held moved with the directory, and
			// its process (done now) could not remove it: orphaned, as
			// Dovecot itself would find after two minutes.
			if err := os.Remove(filepath.Join(aside, "dovecot-uidlist.lock")); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			_, exErr := c2.Select("S1-aside", &imap.SelectOptions{ReadOnly: true}).Wait()
			c2 = redial(t, s, c2)
			if err != nil && exErr != nil && strings.Contains(exErr.Error(), deletedUnderUs) {
				first = fmt.Sprintf("DELETE S1: %v; EXAMINE S1-aside: %v", err, exErr)
				break
			}
			// Not caught in the window: away with it (a plain removal: a
			// DELETE would wait for the uidlist lock Dovecot may have left
			// in it).
			if err := os.RemoveAll(aside); err != nil {
				t.Fatal(err)
			}
		}
		if first == "" {
			t.Fatalf("no DELETE left its folder deleted under the clients in %d rounds", rounds)
		}
		t.Logf("round %d: %s", rounds, first)
		logPath := filepath.Join(aside, "dovecot.index.log")
		st, err := os.Stat(logPath)
		if err != nil {
			t.Fatal(err)
		}
		if age := time.Since(st.ModTime()); age >= (deleteRetrySecs-5)*time.Second {
			t.Fatalf("the index log is already %v old", age)
		}
		err = c2.Delete("S1-aside").Wait()
		if err == nil || !strings.Contains(err.Error(), "Mailbox exists") {
			t.Fatalf("DELETE S1-aside at once: %v, want NO Mailbox exists", err)
		}
		if longMode() {
			t.Logf("waiting for the index log to be %d s old", deleteRetrySecs)
			for i := 0; time.Since(st.ModTime()) <= (deleteRetrySecs+1)*time.Second; i++ {
				if i > 400 {
					t.Fatal("the clock did not move on")
				}
				time.Sleep(100 * time.Millisecond)
			}
		} else {
			old := time.Now().Add(-(deleteRetrySecs + 10) * time.Second)
			if err := os.Chtimes(logPath, old, old); err != nil {
				t.Fatal(err)
			}
		}
		if err := c2.Delete("S1-aside").Wait(); err != nil {
			t.Fatalf("DELETE S1-aside once its index log is %d s old: %v", deleteRetrySecs, err)
		}
		if _, err := os.Stat(aside); !os.IsNotExist(err) {
			t.Fatalf("S1-aside after its DELETE: %v", err)
		}
	})
}

// TestRacedDeleteAnswer: the refusals of a DELETE that may have marked the
// folder's index deleted (the answers Dovecot gave in the stress and in
// the Dovecot-alone tests), and some that cannot have.
func TestRacedDeleteAnswer(t *testing.T) {
	for answer, want := range map[string]bool{
		"imap: NO [NONEXISTENT] Mailbox was deleted under us (0.003 + 0.000 + 0.002 secs).":                                                           true,
		"imap: NO [NONEXISTENT] Mailbox doesn't exist: S2 (0.010 + 0.000 + 0.009 secs).":                                                              true,
		"imap: NO [SERVERBUG] Internal error occurred. Refer to server log for more information. [2026-11-29 12:55:21] (0.005 + 0.000 + 0.004 secs).": true,
		"imap: NO Mailbox exists (0.003 + 0.000 + 0.002 secs).":                                                                                       false,
		"imap: NO [ALREADYEXISTS] Target mailbox already exists (0.002 + 0.000 + 0.001 secs).":                                                        false,
	} {
		if got := racedDeleteAnswer(answer); got != want {
			t.Errorf("racedDeleteAnswer(%q) = %v, want %v", answer, got, want)
		}
	}
}
