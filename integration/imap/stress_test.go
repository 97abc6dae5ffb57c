package imap

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// ledger is what the stress clients did and saw, shared by all of them.
type ledger struct {
	mu       sync.Mutex
	appended map[string]string // body hash -> where it was appended
	mayGone  map[string]bool   // hashes an operation may have removed (expunge, move into or append to a folder that may be deleted)
	seen     map[string]string // "side/mailbox/uidvalidity/uid" -> body hash (INBOX and Work only)
	conflict []string
	ops      map[string]int // operation -> done
	refused  map[string]int // operation -> NO/BAD answers (a folder or message another client or the sync removed)
	// reconnects counts sessions Dovecot ended (BYE) under a client.
	reconnects int
}

func (l *ledger) observe(side, mailbox string, uidValidity, uid uint32, h string) {
	if mailbox != "INBOX" && mailbox != "Work" {
		return
	}
	k := fmt.Sprintf("%s/%s/%d/%d", side, mailbox, uidValidity, uid)
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.seen[k]; ok && old != h {
		l.conflict = append(l.conflict, fmt.Sprintf("%s: body %s, later %s", k, old[:12], h[:12]))
	}
	l.seen[k] = h
}

func (l *ledger) count(op string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.refused[op]++
	} else {
		l.ops[op]++
	}
}

// permanent folders are never deleted or renamed by the stress clients;
// scratch folders are created, renamed and deleted at random.
var (
	permanent = []string{"INBOX", "Work"}
	scratch   = []string{"S1", "S2", "S3", "S1/Kid"}
	flagPool  = []imap.Flag{imap.FlagSeen, imap.FlagFlagged, imap.FlagAnswered, imap.FlagDraft, "$A", "$B", "Later"}
)

// folderOps reports whether the stress clients also create, rename and
// delete folders (TWINBOX_STRESS_FOLDERS=1). Off by default: with them the
// run finds twinbox bugs not fixed yet (see the package comment). Without
// them the scratch folders never exist, and operations on them are refused.
func folderOps() bool { return os.Getenv("TWINBOX_STRESS_FOLDERS") == "1" }

// stressClient is one IMAP client doing random operations on one side.
type stressClient struct {
	name string
	s    *side
	c    *imapclient.Client
	rnd  *rand.Rand
	l    *ledger
	seq  int
}

// refusal reports whether err is a tagged NO/BAD answer: the operation was
// refused (its folder or message is gone), the connection is fine.
func refusal(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie)
}

func (sc *stressClient) pickBox(withScratch bool) string {
	if withScratch && sc.rnd.IntN(3) == 0 {
		return scratch[sc.rnd.IntN(len(scratch))]
	}
	return permanent[sc.rnd.IntN(len(permanent))]
}

// pickMsg selects mailbox and returns a random message's UID and body hash
// (0 when the mailbox is empty or gone).
func (sc *stressClient) pickMsg(mailbox string) (uint32, string, error) {
	sel, err := sc.c.Select(mailbox, nil).Wait()
	if err != nil {
		return 0, "", err
	}
	if sel.NumMessages == 0 {
		return 0, "", nil
	}
	seq := uint32(sc.rnd.IntN(int(sel.NumMessages))) + 1
	body := &imap.FetchItemBodySection{Peek: true}
	msgs, err := sc.c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{body}}).Collect()
	if err != nil || len(msgs) == 0 || msgs[0].UID == 0 {
		return 0, "", err
	}
	raw := msgs[0].FindBodySection(body)
	h := hashOf(raw)
	if len(raw) > 0 {
		// (An empty body is a message expunged under the session, by
		// another client or a sync: Dovecot sends it without content.)
		sc.l.observe(sc.s.name, mailbox, sel.UIDValidity, uint32(msgs[0].UID), h)
	}
	return uint32(msgs[0].UID), h, nil
}

// step does one random operation. It returns an error only for a broken
// connection; refusals are counted.
func (sc *stressClient) step() error {
	sc.seq++
	var op string
	var err error
	switch n := sc.rnd.IntN(100); {
	case n < 30:
		op = "append"
		box := sc.pickBox(true)
		b := body(fmt.Sprintf("stress %s %d", sc.name, sc.seq))
		var flags []imap.Flag
		if sc.rnd.IntN(2) == 0 {
			flags = append(flags, flagPool[sc.rnd.IntN(len(flagPool))])
		}
		if err = appendErr(sc.c, box, b, flags...); err == nil {
			sc.l.mu.Lock()
			sc.l.appended[hashOf(b)] = sc.s.name + "/" + box
			if !slices.Contains(permanent, box) {
				sc.l.mayGone[hashOf(b)] = true
			}
			sc.l.mu.Unlock()
		}
	case n < 52:
		op = "store"
		var uid uint32
		if uid, _, err = sc.pickMsg(sc.pickBox(true)); err == nil && uid != 0 {
			o := imap.StoreFlagsAdd
			if sc.rnd.IntN(2) == 0 {
				o = imap.StoreFlagsDel
			}
			_, err = sc.c.Store(uidSet(uid), &imap.StoreFlags{Op: o, Silent: true, Flags: []imap.Flag{flagPool[sc.rnd.IntN(len(flagPool))]}}, nil).Collect()
		}
	case n < 60:
		op = "expunge"
		var uid uint32
		var h string
		if uid, h, err = sc.pickMsg(sc.pickBox(true)); err == nil && uid != 0 {
			sc.l.mu.Lock()
			sc.l.mayGone[h] = true
			sc.l.mu.Unlock()
			if _, err = sc.c.Store(uidSet(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err == nil {
				_, err = sc.c.UIDExpunge(uidSet(uid)).Collect()
			}
		}
	case n < 68, n < 76:
		move := n >= 68
		op = "copy"
		if move {
			op = "move"
		}
		var uid uint32
		var h string
		if uid, h, err = sc.pickMsg(sc.pickBox(true)); err == nil && uid != 0 {
			dst := sc.pickBox(true)
			if move {
				if !slices.Contains(permanent, dst) {
					sc.l.mu.Lock()
					sc.l.mayGone[h] = true
					sc.l.mu.Unlock()
				}
				_, err = sc.c.Move(uidSet(uid), dst).Wait()
			} else {
				_, err = sc.c.Copy(uidSet(uid), dst).Wait()
			}
		}
	case n < 82 && folderOps():
		op = "create"
		err = sc.c.Create(scratch[sc.rnd.IntN(len(scratch))], nil).Wait()
	case n < 86 && folderOps():
		op = "rename"
		from, to := scratch[sc.rnd.IntN(3)], scratch[sc.rnd.IntN(3)]
		if from == to {
			return nil
		}
		err = sc.c.Rename(from, to, nil).Wait()
	case n < 90 && folderOps():
		op = "delete"
		err = sc.c.Delete(scratch[sc.rnd.IntN(len(scratch))]).Wait()
	case n < 90:
		return nil // folder operations are off
	default:
		op = "subscribe"
		name := sc.pickBox(true)
		if sc.rnd.IntN(2) == 0 {
			op = "unsubscribe"
			err = sc.c.Unsubscribe(name).Wait()
		} else {
			err = sc.c.Subscribe(name).Wait()
		}
	}
	if err != nil && !refusal(err) {
		// Dovecot ends the session of a client whose selected mailbox
		// was deleted or renamed under it (by another client, or by a
		// sync bringing a delete): log in again. The operation's outcome
		// is unknown, so the ledger does not count it.
		sc.l.mu.Lock()
		sc.l.reconnects++
		sc.l.mu.Unlock()
		sc.c.Close()
		c, derr := imapclient.DialInsecure(sc.s.srv.Addr, nil)
		if derr != nil {
			return fmt.Errorf("%s: %s: %v; reconnecting: %w", sc.name, op, err, derr)
		}
		if derr := c.Login(sc.s.srv.User, sc.s.srv.Password).Wait(); derr != nil {
			c.Close()
			return fmt.Errorf("%s: %s: %v; logging in again: %w", sc.name, op, err, derr)
		}
		sc.c = c
		return nil
	}
	sc.l.count(op, err)
	return nil
}

// syncLoop runs `twinbox sync` between the roots until stop is closed,
// killing some runs with SIGKILL at a random moment.
type syncLoop struct {
	runs, kills, changed int
	failures             []string
	// log collects every run's verbose output (kept when the test fails).
	log bytes.Buffer
}

func (sl *syncLoop) run(p *pair, rnd *rand.Rand, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		cmd := exec.Command(bin, "sync", "-v", p.a.root(), p.b.root())
		cmd.Env = append(env(), "TWINBOX_DEBUG=1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			sl.failures = append(sl.failures, err.Error())
			return
		}
		sl.runs++
		var timer *time.Timer
		if rnd.IntN(3) == 0 {
			d := time.Duration(rnd.IntN(300)) * time.Millisecond
			timer = time.AfterFunc(d, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
		}
		done := make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-time.After(cmdTimeout):
				_ = cmd.Process.Kill()
			}
		}()
		err := cmd.Wait()
		close(done)
		if timer != nil {
			timer.Stop()
		}
		fmt.Fprintf(&sl.log, "=== sync run %d (%s, ended %s)\n%s", sl.runs, cmd.ProcessState, time.Now().Format("15:04:05.000"), out.String())
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			sl.kills++
			continue
		}
		if strings.Contains(out.String(), brokenIndex) {
			sl.failures = append(sl.failures, fmt.Sprintf("sync run %d:\n%s", sl.runs, out.String()))
		}
		switch code := cmd.ProcessState.ExitCode(); code {
		case 0:
		case 2:
			sl.changed++
		default:
			sl.failures = append(sl.failures, fmt.Sprintf("sync run %d: exit %d (%v):\n%s", sl.runs, code, err, out.String()))
		}
	}
}

// TestConcurrentClientsAndSyncs: several IMAP clients per side do random
// operations while `twinbox sync` runs in a loop between the roots, some
// runs killed with SIGKILL; then quiescence. Afterwards both sides' IMAP
// views are identical, no message that no client removed is lost, no UID
// of INBOX or Work ever showed two different bodies to the clients, and
// neither Dovecot logged a warning of issue 3's list.
func TestConcurrentClientsAndSyncs(t *testing.T) { dovecot.ForEach(t, testConcurrentClientsAndSyncs) }

func testConcurrentClientsAndSyncs(t *testing.T, d *dovecot.Install) {
	sd := seed(t)
	clients, steps := 3, 40
	if longMode() {
		steps = 400
	}
	p := newPair(t, dovecot.ServerOptions{Dovecot: d})
	ca := dial(t, p.a)
	if err := ca.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	_ = ca.Logout().Wait()
	p.settle(t)

	l := &ledger{appended: map[string]string{}, mayGone: map[string]bool{}, seen: map[string]string{}, ops: map[string]int{}, refused: map[string]int{}}
	stop := make(chan struct{})
	sl := &syncLoop{}
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		sl.run(p, newRand(sd^0x5eed), stop)
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 2*clients)
	for _, s := range p.sides() {
		for i := range clients {
			sc := &stressClient{name: fmt.Sprintf("%s%d", s.name, i), s: s, c: dial(t, s), l: l,
				rnd: newRand(sd + uint64(i)*7919 + uint64(len(s.name)+int(s.name[0]))*104729)}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range steps {
					if err := sc.step(); err != nil {
						errs <- err
						return
					}
				}
				_ = sc.c.Logout().Wait()
				sc.c.Close()
			}()
		}
	}
	wg.Wait()
	close(stop)
	<-loopDone
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}
	for _, f := range sl.failures {
		t.Errorf("%s", f)
	}
	t.Logf("clients %d per side, %d steps each; syncs during the run %d (%d killed with SIGKILL, %d exit 2)", clients, steps, sl.runs, sl.kills, sl.changed)
	t.Logf("operations done %v; refused (NO/BAD, target gone) %v; sessions ended by Dovecot %d", l.ops, l.refused, l.reconnects)

	// Quiescence.
	before := p.syncs
	p.settle(t)
	t.Logf("quiescence took %d syncs", p.syncs-before)
	va, vb := p.requireSame(t)
	for name, b := range va.Boxes {
		for u, m := range b.Msgs {
			l.observe("A", name, b.UIDValidity, u, m.Hash)
		}
	}
	for name, b := range vb.Boxes {
		for u, m := range b.Msgs {
			l.observe("B", name, b.UIDValidity, u, m.Hash)
		}
	}
	if len(l.conflict) > 0 {
		t.Errorf("UIDs changed their meaning:\n  %s", strings.Join(l.conflict, "\n  "))
	}
	have := va.hashes()
	lost := 0
	for h, where := range l.appended {
		if !l.mayGone[h] && len(have[h]) == 0 {
			lost++
			t.Errorf("message appended to %s and never removed by a client is lost (%s)", where, h[:12])
		}
	}
	t.Logf("%d messages appended, %d possibly removed by clients, %d in the final view, %d lost", len(l.appended), len(l.mayGone), len(have), lost)
	defer func() {
		if t.Failed() {
			f, err := os.CreateTemp("", "twinbox-stress-syncs-*.log")
			if err == nil {
				_, _ = f.Write(sl.log.Bytes())
				f.Close()
				t.Logf("the syncs' verbose output: %s", f.Name())
			}
		}
	}()
	// With folder operations, Dovecot logs a few errors that it logs
	// without twinbox too, when a client deletes or renames a folder
	// another is saving into (proved by TestDovecotAloneLogs): forgiven,
	// exactly those lines and only about the scratch folders that the
	// clients delete and rename.
	gone := map[string]bool{}
	if folderOps() {
		for _, a := range scratch {
			gone["."+strings.ReplaceAll(a, "/", ".")] = true
			for _, b := range scratch[:3] {
				gone["."+b+".Kid"] = true // S1/Kid renamed with its parent
			}
		}
	}
	forgiven, dups := p.checkLogsForgiving(t, gone)
	if forgiven > 0 {
		t.Logf("forgave %d Dovecot error lines that Dovecot logs without twinbox (a client deleted or renamed a folder another was saving into)", forgiven)
	}
	t.Logf("Dovecot's \"Duplicate file entry\" warnings: %d", dups)
}
