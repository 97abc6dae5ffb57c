package imap

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// bumpUIDValidity rewrites the UIDVALIDITY in the header of the uidlist in
// dir to one more than it was (what a sync's merge of a folder made on both
// sides does to one of them; here a plain process does it, no twinbox).
func bumpUIDValidity(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "dovecot-uidlist")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	hdr, rest, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(hdr)
	done := false
	for i, x := range f {
		if strings.HasPrefix(x, "V") {
			v, err := strconv.ParseUint(x[1:], 10, 32)
			if err != nil {
				t.Fatalf("%s: header %q: %v", p, hdr, err)
			}
			f[i] = fmt.Sprintf("V%d", v+1)
			done = true
		}
	}
	if !done {
		t.Fatalf("%s: no UIDVALIDITY in header %q", p, hdr)
	}
	// Written in place: the file keeps its owner (Dovecot's user).
	if err := os.WriteFile(p, []byte(strings.Join(f, " ")+"\n"+rest), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitLine waits (bounded: 10 s, no assertion on the time) until Dovecot's
// log has a line matching re, and reports whether it has.
func waitLine(srv *dovecot.Server, re *regexp.Regexp) bool {
	for i := 0; i < 1000; i++ {
		if countLines(srv.Log(), re) > 0 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// TestDovecotAloneResetFolderSwappedIn: one Dovecot, no twinbox. A client
// has S1 selected; a plain process swaps S3 in at S1 by rename(2), as a
// sync replicating RENAME S3 S1 onto a taken name does (S3 to a temporary
// name, S1 aside, the temporary name to S1); the client MOVEs a message out
// of S1. (1) When S3's index had been reset before (a plain process changed
// the UIDVALIDITY in its uidlist, as a sync's merge of a folder made on
// both sides does, and a client's SELECT made Dovecot log "UIDVALIDITY
// changed" and start a transaction log file that resets the index), the
// client's Dovecot process logs ".../.S1/dovecot.index reset, view is now
// inconsistent" and ends the session, though no UIDVALIDITY of S1 changed
// under that name. (2) Without that reset it logs no such line (but
// swappedUnderSession's "duplicate transaction log sequence"). The stress
// test forgives the line exactly so: a scratch folder's directory that a
// sync moved another scratch folder into whose UIDVALIDITY change the log
// showed before (resetSwappedIn).
func TestDovecotAloneResetFolderSwappedIn(t *testing.T) {
	dovecot.ForEach(t, testDovecotAloneResetFolderSwappedIn)
}

func testDovecotAloneResetFolderSwappedIn(t *testing.T, d *dovecot.Install) {
	for _, reset := range []bool{true, false} {
		srv := dovecot.StartServer(t, dovecot.ServerOptions{Dovecot: d, Name: "alone"})
		s := &side{name: "X", srv: srv}
		c1, c2 := dial(t, s), dial(t, s)
		for _, n := range []string{"S1", "S3", "Work"} {
			if err := c2.Create(n, nil).Wait(); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				appendMsg(t, c2, n, body(fmt.Sprintf("%s %d", n, i)))
			}
		}
		r := srv.Root
		if reset {
			bumpUIDValidity(t, filepath.Join(r, ".S3"))
			selectBox(t, c2, "S3")
			if err := c2.Unselect().Wait(); err != nil {
				t.Fatal(err)
			}
			if !waitLine(srv, uidValidityChanged) {
				t.Fatalf("Dovecot logged no UIDVALIDITY change of S3; log:\n%s", errorLines(srv.Log()))
			}
		}
		selectBox(t, c1, "S1")
		for _, mv := range [][2]string{{".S3", "twinbox-tmp-x"}, {".S1", ".S1-aside"}, {"twinbox-tmp-x", ".S1"}} {
			if err := os.Rename(filepath.Join(r, mv[0]), filepath.Join(r, mv[1])); err != nil {
				t.Fatal(err)
			}
		}
		_, err := c1.Move(imap.UIDSetNum(2), "Work").Wait()
		c1.Close()
		c2.Close()
		if reset {
			got := waitLine(srv, indexReset)
			t.Logf("S3 reset, then swapped in under a session: MOVE: %v; Dovecot alone logged:\n%s", err, errorLines(srv.Log()))
			if !got {
				t.Errorf("Dovecot alone logged no %q for a reset folder swapped in under a session", indexReset)
			}
			continue
		}
		waitLine(srv, swappedUnderSession)
		t.Logf("S3 not reset, swapped in under a session: MOVE: %v; Dovecot alone logged:\n%s", err, errorLines(srv.Log()))
		if countLines(srv.Log(), indexReset) > 0 {
			t.Errorf("Dovecot alone logged %q for a folder swapped in without a reset: resetSwappedIn's condition is too narrow", indexReset)
		}
	}
}
