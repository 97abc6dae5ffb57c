package dovecot

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// imapSession is a minimal IMAP client for the harness's own test (the IMAP tests
// proper use go-imap in integration/imap).
type imapSession struct {
	t   *testing.T
	c   net.Conn
	r   *bufio.Reader
	tag int
}

// cmd sends one command (with an optional literal) and returns the untagged lines
// and the tagged status line.
func (s *imapSession) cmd(line string, literal []byte) ([]string, string) {
	s.t.Helper()
	s.tag++
	tag := fmt.Sprintf("t%d", s.tag)
	_ = s.c.SetDeadline(time.Now().Add(30 * time.Second))
	if literal != nil {
		fmt.Fprintf(s.c, "%s %s {%d}\r\n", tag, line, len(literal))
		if l, err := s.r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+") {
			s.t.Fatalf("%s: no continuation: %q %v", line, l, err)
		}
		s.c.Write(append(literal, '\r', '\n'))
	} else {
		fmt.Fprintf(s.c, "%s %s\r\n", tag, line)
	}
	var untagged []string
	for i := 0; i < 1000; i++ {
		l, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("%s: %v", line, err)
		}
		l = strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l
		}
		untagged = append(untagged, l)
	}
	s.t.Fatalf("%s: no tagged answer", line)
	return nil, ""
}

// TestServerServesTheRoot starts a server of each version, APPENDs a message and
// creates a folder over IMAP, and checks that the files appear under Root on the host
// (the path twinbox syncs), that the doveadm judge of the same installation reads them,
// that the server runs the expected version, and that its log (read on the host) has
// no warning.
func TestServerServesTheRoot(t *testing.T) { ForEach(t, testServerServesTheRoot) }

func testServerServesTheRoot(t *testing.T, d *Install) {
	s := StartServer(t, ServerOptions{Name: "h", Dovecot: d})
	if d.Chroot() != "" && !s.Version().Is24() {
		t.Fatalf("the trixie root runs Dovecot %s, want 2.4", s.Version())
	}
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess := &imapSession{t: t, c: c, r: bufio.NewReader(c)}
	if l, err := sess.r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q %v", l, err)
	}
	for _, step := range []struct {
		line    string
		literal []byte
	}{
		{line: fmt.Sprintf("LOGIN %s %s", s.User, s.Password)},
		{line: "CREATE Work"},
		{line: "SUBSCRIBE Work"},
		{line: `APPEND Work (\Seen $Label1) "01-Nov-2026 10:00:00 +0000"`, literal: []byte("Subject: hello\r\n\r\nbody\r\n")},
		{line: "LOGOUT"},
	} {
		if _, st := sess.cmd(step.line, step.literal); !strings.Contains(st, " OK") {
			t.Fatalf("%s: %s", step.line, st)
		}
	}
	files, _ := filepath.Glob(filepath.Join(s.Root, ".Work", "cur", "*"))
	if len(files) != 1 || !strings.HasSuffix(files[0], ":2,Sa") {
		t.Errorf("host sees in %s/.Work/cur: %q; want one file with flags Sa", s.Root, files)
	}
	for _, f := range []string{"subscriptions", ".Work/dovecot-uidlist", ".Work/dovecot-keywords"} {
		if _, err := os.Stat(filepath.Join(s.Root, f)); err != nil {
			t.Errorf("host: %v", err)
		}
	}
	j := NewJudgeFor(t, d)
	v := mustRead(t, j, s.Root, Snapshot())
	if p := v.Check(); len(p) > 0 {
		t.Errorf("judge: %s", strings.Join(p, "\n"))
	}
	mb := v.Mailbox("Work")
	if mb == nil || mb.Count != 1 || len(mb.Messages) != 1 || strings.Join(mb.Messages[0].Keywords(), " ") != "$Label1" {
		t.Errorf("judge sees Work = %+v", mb)
	}
	// doveadm against the running server (the flag-change hook's command).
	if out, err := s.Doveadm("force-resync", "-u", s.User, "*"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("doveadm force-resync: %v: %s", err, out)
	}
	if out, err := s.Doveadm("-f", "flow", "mailbox", "status", "-u", s.User, "messages", "Work"); err != nil || !strings.Contains(out, "messages=1") {
		t.Errorf("doveadm mailbox status: %v: %s", err, out)
	}
	s.Stop()
	log := s.Log()
	want := "Dovecot v" + s.Version().Series()
	if !strings.Contains(log, want) {
		t.Errorf("log has no %q:\n%s", want, log)
	}
	for _, l := range filterLog(log) {
		if !strings.Contains(l, " master: ") {
			t.Errorf("log: %s", l)
		}
	}
	t.Logf("%s: %s", d, strings.SplitN(log, "\n", 2)[0])
}
