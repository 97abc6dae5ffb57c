package imap

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// TestAutocreatedFoldersMerge: each Dovecot autocreates Drafts and Sent on
// its own (different GUIDs and UIDVALIDITYs), clients put mail in both;
// the sync merges them: one Drafts and one Sent on both sides with all the
// mail, subscribed alike.
func TestAutocreatedFoldersMerge(t *testing.T) { dovecot.ForEach(t, testAutocreatedFoldersMerge) }

func testAutocreatedFoldersMerge(t *testing.T, d *dovecot.Install) {
	p := newPair(t, dovecot.ServerOptions{Dovecot: d, AutoCreate: []string{"Drafts"}, AutoSubscribe: []string{"Sent"}})
	var want []string
	for _, s := range p.sides() {
		c := dial(t, s)
		selectBox(t, c, "Drafts")
		want = append(want, appendMsg(t, c, "Drafts", body("draft on "+s.name), imap.FlagDraft))
		want = append(want, appendMsg(t, c, "Sent", body("sent on "+s.name), imap.FlagSeen))
		_ = c.Logout().Wait()
	}
	p.settle(t)
	va, _ := p.requireSame(t)
	for i, h := range want {
		box := []string{"Drafts", "Sent"}[i%2]
		msgIn(t, va, box, h)
	}
	if !slices.Contains(va.Subs, "Sent") {
		t.Errorf("Sent not subscribed: %v", va.Subs)
	}
	// The merge gives one side's Drafts and Sent the other's UIDVALIDITY
	// (contract: one UIDVALIDITY after a merge); when that side's Dovecot
	// had already written its index of the folder, the next session says
	// so ("UIDVALIDITY changed", seen once in a loaded `make test`). That
	// notice, for these two folders, is the expected one; any other line
	// fails the test.
	merged := map[string]bool{".Drafts": true, ".Sent": true}
	for _, s := range p.sides() {
		var bad []string
		for _, l := range logProblems(s.srv.Log()) {
			if !mergedFolderLine(s.srv.Root, l, merged) {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			t.Errorf("Dovecot %s logged:\n  %s", s.name, strings.Join(bad, "\n  "))
		}
	}
}

// TestDovecotBusyDuringSync: while a sync copies a few hundred messages,
// IMAP clients on both sides make Dovecot move them from new/ to cur/,
// rename them for flags and rewrite the uidlist (APPENDs). Every sync exits
// 0 or 2; the next ones converge; nothing is lost.
func TestDovecotBusyDuringSync(t *testing.T) { dovecot.ForEach(t, testDovecotBusyDuringSync) }

func testDovecotBusyDuringSync(t *testing.T, d *dovecot.Install) {
	p := newPair(t, dovecot.ServerOptions{Dovecot: d})
	n := 150
	if longMode() {
		n = 1000
	}
	// INBOX gets one identity on both sides first: else the first busy
	// sync merges two INBOXes that the clients' Dovecots made a second
	// apart, and the merge's one UIDVALIDITY (contract §3.4) makes one
	// Dovecot log "UIDVALIDITY changed" (TestAutocreatedFoldersMerge is
	// about that).
	delivered := []string{deliverMTA(t, p.a, "", body("before the busy syncs"), 2*n)}
	p.settle(t)
	for i := range n {
		delivered = append(delivered, deliverMTA(t, p.a, "", body(fmt.Sprintf("busy a %d", i)), i))
	}
	for i := range n / 5 {
		delivered = append(delivered, deliverMTA(t, p.b, "", body(fmt.Sprintf("busy b %d", i)), n+i))
	}
	var (
		mu       sync.Mutex
		appended []string
		during   int // client operations done while a sync ran
	)
	for round := range 3 {
		sp := start(t, nil, "sync", p.a.root(), p.b.root())
		p.syncs++
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for _, s := range p.sides() {
			c := dial(t, s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = c.Logout().Wait() }()
				// Until the sync ends (at most 100 rounds): SELECT (new/ ->
				// cur/), flag changes on everything (renames in cur/), an
				// APPEND (a uidlist rewrite).
				for i := 0; i < 100; i++ {
					if _, err := c.Select("INBOX", nil).Wait(); err != nil {
						errs <- fmt.Errorf("%s: SELECT: %w", s.name, err)
						return
					}
					op := imap.StoreFlagsAdd
					if i%2 == 1 {
						op = imap.StoreFlagsDel
					}
					all := imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}
					if _, err := c.Store(all, &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{"$Busy"}}, nil).Collect(); err != nil {
						errs <- fmt.Errorf("%s: STORE: %w", s.name, err)
						return
					}
					b := body(fmt.Sprintf("during sync %d on %s #%d", round, s.name, i))
					if err := appendErr(c, "INBOX", b); err != nil {
						errs <- fmt.Errorf("%s: APPEND: %w", s.name, err)
						return
					}
					mu.Lock()
					appended = append(appended, hashOf(b))
					running := sp.running()
					if running {
						during++
					}
					mu.Unlock()
					if !running {
						return
					}
				}
			}()
		}
		r := sp.wait(t)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if r.code != 0 && r.code != 2 {
			t.Fatalf("round %d:\n%s", round, r)
		}
	}
	t.Logf("%d client rounds (SELECT, STORE on all, APPEND) finished while a sync ran", during)
	p.settle(t)
	va, _ := p.requireSame(t)
	for _, h := range append(delivered, appended...) {
		msgIn(t, va, "INBOX", h)
	}
	p.checkLogs(t)
}
