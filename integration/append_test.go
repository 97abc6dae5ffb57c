package integration

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
)

// mailOwner returns the credentials of the judge's mail user when running
// as root (twinbox then runs as the user Dovecot runs as, on Maildirs it
// owns), else nil.
func mailOwner(t *testing.T, j *dovecot.Judge, roots ...string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	for _, r := range roots {
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
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

func uidlistStat(t *testing.T, root string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(filepath.Join(testmail.Dir(t, root, "INBOX"), maildir.UidlistName))
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// dovecotSays reads root in place with Dovecot's on-disk indexes (it takes
// its locks and gives UIDs to files it finds, appending to the uidlist)
// and returns what it complained about.
func dovecotSays(t *testing.T, j *dovecot.Judge, root string) []string {
	t.Helper()
	v, err := j.Read(root, dovecot.DiskIndexes())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, w := range v.Warnings {
		// The reader racing a sync's renumbering (expunge under the old
		// UID) is not a complaint about the files.
		if !strings.HasPrefix(w, "twinbox judge:") && !strings.Contains(w, ": exit status ") && !strings.HasSuffix(w, ": Message was expunged") {
			out = append(out, w)
		}
	}
	return out
}

// TestJudgeUidlistAppends: twinbox appends uidlist records for new messages
// (design §9 item 13) and Dovecot, which keeps its indexes on disk and
// remembers the uidlist's mtime and size, sees each appended message under
// the right UID and complains about nothing; Dovecot's own appends between
// and during syncs mix with twinbox's.
func TestJudgeUidlistAppends(t *testing.T) {
	j := dovecot.NewJudge(t)
	a, b := pair(t)
	inPlace := []dovecot.Option{dovecot.DiskIndexes()}
	for i := 0; i < 3; i++ {
		testmail.Deliver(t, a, "INBOX", "old")
	}
	if err := os.MkdirAll(b, 0o700); err != nil {
		t.Fatal(err)
	}
	cred := mailOwner(t, j, a, b)
	deliver := func(root, body string) string {
		t.Helper()
		m := testmail.Deliver(t, root, "INBOX", body)
		if cred != nil {
			if err := j.Own(root); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	syncAs := func(want ...int) result {
		t.Helper()
		r := startAs(t, cred, nil, "sync", "--json", a, b).wait(cmdTimeout)
		for _, w := range want {
			if r.code == w {
				return r
			}
		}
		t.Fatalf("sync: want exit %v:\n%s", want, r)
		return r
	}
	syncAs(0)
	syncAs(0)
	judgeBoth(t, j, a, b, inPlace...)

	// One new message: appended on both sides (same inode), and Dovecot,
	// whose index recorded the old mtime and size, reads it.
	fa, fb := uidlistStat(t, a), uidlistStat(t, b)
	m := deliver(a, "new")
	syncAs(0)
	if !os.SameFile(fa, uidlistStat(t, a)) || !os.SameFile(fb, uidlistStat(t, b)) {
		t.Fatalf("a uidlist was rewritten, not appended to")
	}
	va, _ := judgeBoth(t, j, a, b, inPlace...)
	if got := messageByGUID(t, mailbox(t, va, "INBOX"), m).UID; got != 4 {
		t.Fatalf("Dovecot sees the new message at UID %d, want 4", got)
	}

	// Dovecot appends on B (a message it finds), then twinbox appends
	// behind it again.
	d := deliver(b, "Dovecot's")
	if w := dovecotSays(t, j, b); len(w) > 0 {
		t.Fatalf("Dovecot on B:\n  %s", strings.Join(w, "\n  "))
	}
	if u := testmail.UIDs(t, b, "INBOX"); u[5] != d {
		t.Fatalf("Dovecot did not give UID 5 to %s: %v", d, u)
	}
	syncAs(0)
	syncAs(0)
	fb = uidlistStat(t, b)
	m2 := deliver(a, "after Dovecot's")
	syncAs(0)
	if !os.SameFile(fb, uidlistStat(t, b)) {
		t.Errorf("B's uidlist was rewritten, not appended to, after Dovecot's append")
	}
	va, _ = judgeBoth(t, j, a, b, inPlace...)
	if got := messageByGUID(t, mailbox(t, va, "INBOX"), m2).UID; got != 6 {
		t.Fatalf("Dovecot sees %s at UID %d, want 6", m2, got)
	}

	// At the same time: deliveries on both sides, Dovecot reading (and
	// appending on) B while syncs run.
	var warnings []string
	reads := 0
	for round := 0; round < 6; round++ {
		deliver(a, "round A")
		deliver(b, "round B")
		p := startAs(t, cred, nil, "sync", "--json", a, b)
		for i := 0; i < 3 && (i == 0 || p.running()); i++ {
			deliver(b, "during")
			warnings = append(warnings, dovecotSays(t, j, b)...)
			reads++
		}
		if r := p.wait(cmdTimeout); r.code != 0 && r.code != 2 {
			t.Fatalf("sync with Dovecot at work:\n%s", r)
		}
	}
	t.Logf("%d Dovecot reads during syncs", reads)
	if len(warnings) > 0 {
		t.Errorf("Dovecot complained during the syncs:\n  %s", strings.Join(warnings, "\n  "))
	}
	for i := 0; ; i++ {
		r := startAs(t, cred, nil, "sync", a, b).wait(cmdTimeout)
		if r.code == 0 {
			break
		}
		if r.code != 2 || i == 4 {
			t.Fatalf("sync after the changes:\n%s", r)
		}
	}
	runWant(t, 0, "check", a, b)
	judgeBoth(t, j, a, b, inPlace...)
	judgeBoth(t, j, a, b, dovecot.Snapshot())
}
