package integration

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// TestChangesDuringSync: while a large sync runs, an MTA delivers into both
// replicas, clients change flags (renames in cur/, as Dovecot does), and
// Dovecot itself reads the far replica in place (taking its locks, giving
// UIDs to files it finds). Contract §6: changes during a sync are never lost;
// they are picked up by this sync or trigger the next (exit 2). §7: Dovecot
// never finds anything to repair. Without Dovecot the reads are left out.
func TestChangesDuringSync(t *testing.T) {
	var j *dovecot.Judge
	if dovecot.Available() == nil || os.Getenv(dovecot.RequireEnv) == "1" {
		j = dovecot.NewJudge(t)
	} else {
		t.Log("Dovecot not available: no Dovecot reads during the sync")
	}
	ct := newCrashTest(t)
	n := messages() / 2
	ct.deliverBatch(ct.a, ct.ga, n, len(crashFolders), 2)
	ct.deliverBatch(ct.b, ct.gb, n/5, 3, 0)
	// A common base, so that flags can change on both sides.
	syncOK(t, ct.a, ct.b)
	ct.deliverBatch(ct.a, ct.ga, n, len(crashFolders), 1)
	ct.deliverBatch(ct.b, ct.gb, n/2, len(crashFolders), 0)
	base := ct.c.live()

	// With Dovecot, twinbox runs as the mail owner that Dovecot runs as, and
	// the Maildirs belong to it (TestRootRunKeepsMailOwner covers a root run).
	var cred *syscall.Credential
	if j != nil && os.Geteuid() == 0 {
		for _, r := range []string{ct.a, ct.b} {
			if err := j.Own(r); err != nil {
				t.Fatal(err)
			}
		}
		u, err := user.Lookup(j.User())
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	p := startAs(t, cred, nil, "sync", "--json", ct.a, ct.b)
	var warnings []string
	deliveries, flagged, reads := 0, 0, 0
	for i := 0; p.running() || i < 20; i++ {
		// An MTA delivers to either side.
		if i%2 == 0 {
			ct.ga.deliver(t, ct.a, crashFolders[ct.rng.IntN(len(crashFolders))], ct.ga.message(ct.size()), "")
		} else {
			ct.gb.deliver(t, ct.b, crashFolders[ct.rng.IntN(len(crashFolders))], ct.gb.message(ct.size()), "")
		}
		deliveries++
		// A client flags a message that both sides had.
		m := base[ct.rng.IntN(len(base))]
		root, letter := ct.a, "F"
		if i%3 == 0 {
			root, letter = ct.b, "D"
		}
		if f := findFile(boxDir(root, m.box), m.base); f != "" {
			_, info, _ := strings.Cut(filepath.Base(f), ":")
			cur, _ := strings.CutPrefix(info, "2,")
			if err := os.Rename(f, filepath.Join(boxDir(root, m.box), "cur", m.base+":2,"+union(cur, letter))); err == nil {
				m.flags = union(m.flags, letter)
				flagged++
			}
		}
		// Dovecot reads the far side as it is, now and then.
		if j != nil && i%5 == 0 {
			v, err := j.Read(ct.b, dovecot.DiskIndexes())
			if err != nil {
				t.Fatal(err)
			}
			// Only what Dovecot said: the judge's own consistency checks
			// assume that nothing changes while it reads.
			// A fetch of a message expunged between doveadm's listing and
			// its fetch ("Message was expunged") is the reader racing an
			// expunge, not a complaint about the files: a renumbered
			// message is expunged under its old UID and file name.
			for _, w := range v.Warnings {
				if !strings.HasPrefix(w, "twinbox judge:") && !strings.Contains(w, ": exit status ") && !strings.HasSuffix(w, ": Message was expunged") {
					warnings = append(warnings, w)
				}
			}
			reads++
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := p.wait(cmdTimeout)
	t.Logf("during the sync (%v, exit %d): %d deliveries, %d flag changes, %d Dovecot reads", r.dur.Round(time.Millisecond), r.code, deliveries, flagged, reads)
	if r.code != 0 && r.code != 2 {
		t.Fatalf("sync with changes under it:\n%s", r)
	}
	if s := parseSummary(t, r); (r.code == 2) != s.Changed {
		t.Errorf("exit %d but changed_during_sync %v", r.code, s.Changed)
	}
	if len(warnings) > 0 {
		t.Errorf("Dovecot complained while reading during the sync:\n  %s", strings.Join(warnings, "\n  "))
	}
	for i := 0; ; i++ {
		r := run(t, "sync", ct.a, ct.b)
		if r.code == 0 {
			break
		}
		if r.code != 2 || i == 4 {
			t.Fatalf("sync after the changes:\n%s", r)
		}
	}
	runWant(t, 0, "check", ct.a, ct.b)
	if j != nil {
		requireClean2(t, ct.c, true, true, ct.a, ct.b)
		judgeBoth(t, j, ct.a, ct.b, dovecot.Snapshot())
	} else {
		requireClean(t, ct.c, true, ct.a, ct.b)
	}
	requireIdle(t, ct.a, ct.b)
}
