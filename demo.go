package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// DemoCmd is `twinbox demo`: the README's "see it work".
type DemoCmd struct {
	Dir  string `help:"Directory to create the two replicas in (default: a new temporary directory)." type:"path"`
	Keep bool   `help:"Keep the directory afterwards (always kept when --dir is given)."`
}

func (c *DemoCmd) Run(g *globals) error {
	dir := c.Dir
	keep := c.Keep || dir != ""
	if dir == "" {
		d, err := os.MkdirTemp("", "twinbox-demo-")
		if err != nil {
			return err
		}
		dir = d
	} else if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("demo: %s is not empty", dir)
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	a, b := filepath.Join(dir, "mx1", "bob", "Maildir"), filepath.Join(dir, "mx2", "bob", "Maildir")
	say := func(f string, args ...any) { fmt.Printf(f+"\n", args...) }
	step := 0
	section := func(title string) { step++; say("\n== %d. %s", step, title) }
	doSync := func(label string) error {
		// First what the engine decided (a dry run), then the sync itself.
		p, err := openPair(g, a, b, "", "", replicaOptions{lockTimeout: 30 * time.Second, dryRun: true})
		if err != nil {
			return err
		}
		plan, err := session.Run(g.ctx, p.a, p.b, session.Options{DryRun: true})
		p.close()
		if err != nil {
			return err
		}
		say("the plan (%s):", label)
		for _, l := range plan.PlanText {
			say("  %s", strings.ReplaceAll(strings.ReplaceAll(l, a, "mx1"), b, "mx2"))
		}
		if len(plan.PlanText) == 0 {
			say("  nothing to do")
		}
		p, err = openPair(g, a, b, "", "", replicaOptions{lockTimeout: 30 * time.Second})
		if err != nil {
			return err
		}
		sum, err := session.Run(g.ctx, p.a, p.b, session.Options{})
		rt := p.roundTrips()
		if cerr := p.close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		var out strings.Builder
		report(&out, sum, false, rt, 0, false)
		say("%s", strings.TrimRight(strings.ReplaceAll(strings.ReplaceAll(out.String(), a, "mx1"), b, "mx2"), "\n"))
		return nil
	}
	n := 0
	deliver := func(root, mailbox, subject string) (string, error) {
		n++
		return demoDeliver(root, mailbox, subject, n)
	}

	say("twinbox demo: two replicas of bob's mail, as on two mail servers")
	say("  mx1: %s\n  mx2: %s", a, b)

	section("mail arrives on mx1 only; first sync copies it to the empty mx2")
	m1, err := deliver(a, "INBOX", "Welcome to twinbox")
	if err != nil {
		return err
	}
	if _, err := deliver(a, "INBOX", "Lunch on Friday?"); err != nil {
		return err
	}
	if _, err := deliver(a, "Work", "Quarterly report"); err != nil {
		return err
	}
	if err := doSync("first sync"); err != nil {
		return err
	}
	showUIDs(a, b, "INBOX", say)

	section("both servers take mail while apart: each gives the next UID (3) to a different message")
	if _, err := deliver(a, "INBOX", "Delivered to mx1"); err != nil {
		return err
	}
	if _, err := deliver(b, "INBOX", "Delivered to mx2"); err != nil {
		return err
	}
	section("a client marks message 1 \\Seen on mx1, another marks it \\Flagged on mx2")
	if err := demoFlags(a, "INBOX", m1, "S"); err != nil {
		return err
	}
	if err := demoFlags(b, "INBOX", m1, "F"); err != nil {
		return err
	}
	section("the folder Work is renamed to Projects on mx1, while new mail arrives in Work on mx2")
	loc := maildir.Location{Root: a}
	from, _ := loc.MailboxDir("Work")
	to, _ := loc.MailboxDir("Projects")
	if err := os.Rename(from, to); err != nil {
		return err
	}
	if _, err := deliver(b, "Work", "Late report"); err != nil {
		return err
	}
	section("sync")
	if err := doSync("conflicts resolved"); err != nil {
		return err
	}
	showUIDs(a, b, "INBOX", say)
	for _, r := range []struct{ name, root string }{{"mx1", a}, {"mx2", b}} {
		boxes, _ := maildir.Location{Root: r.root}.ListMailboxes()
		var names []string
		for _, m := range boxes {
			names = append(names, m.Name)
		}
		say("  %s folders: %s", r.name, strings.Join(names, ", "))
	}

	section("check: are the replicas identical?")
	p, err := openPair(g, a, b, "", "", replicaOptions{lockTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	diffs, err := session.Check(g.ctx, p.a, p.b, session.Options{})
	p.close()
	if err != nil {
		return err
	}
	if len(diffs) > 0 {
		for _, d := range diffs {
			say("  %s", d)
		}
		return fmt.Errorf("demo: the replicas did not converge")
	}
	say("  identical: same folders, UIDVALIDITY, UIDs, flags and keywords on both")
	if keep {
		say("\nThe replicas are in %s", dir)
	}
	return nil
}

func showUIDs(a, b, mailbox string, say func(string, ...any)) {
	for _, r := range []struct{ name, root string }{{"mx1", a}, {"mx2", b}} {
		dir, _ := maildir.Location{Root: r.root}.MailboxDir(mailbox)
		ul, _, err := maildir.ReadUidlist(dir)
		if err != nil {
			continue
		}
		var lines []string
		for _, rec := range ul.Records {
			cur := findFile(dir, rec.FileName)
			if cur == "" {
				continue // an expunged message's record (Dovecot keeps them for a while)
			}
			subj := demoSubject(dir, rec.FileName)
			flags := ""
			if i := strings.Index(cur, ":2,"); i >= 0 {
				flags = cur[i+3:]
			}
			lines = append(lines, fmt.Sprintf("UID %d %q [%s]", rec.UID, subj, flags))
		}
		sort.Strings(lines)
		say("  %s %s (UIDVALIDITY %d, UIDNEXT %d): %s", r.name, mailbox, ul.UIDValidity, ul.NextUID, strings.Join(lines, "; "))
	}
}

func findFile(dir, name string) string {
	base := strings.SplitN(name, ":", 2)[0]
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			if strings.SplitN(e.Name(), ":", 2)[0] == base {
				return e.Name()
			}
		}
	}
	return ""
}

func demoSubject(dir, name string) string {
	f := findFile(dir, name)
	for _, sub := range []string{"cur", "new"} {
		data, err := os.ReadFile(filepath.Join(dir, sub, f))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				return s
			}
		}
	}
	return "?"
}

// demoDeliver writes a message the way an MTA does: tmp/, then new/.
func demoDeliver(root, mailbox, subject string, n int) (string, error) {
	dir, err := maildir.Location{Root: root}.MailboxDir(mailbox)
	if err != nil {
		return "", err
	}
	if err := maildir.CreateMailboxDirs(dir); err != nil {
		return "", err
	}
	now := time.Now()
	msg := fmt.Sprintf("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo%d.%d@example.org>\r\n\r\nHello Bob.\r\n", subject, now.Format(time.RFC1123Z), n, now.UnixNano())
	base := fmt.Sprintf("%d.M%dP%d.demo%d,S=%d", now.Unix(), now.Nanosecond()/1000, os.Getpid(), n, len(msg))
	tmp := filepath.Join(dir, "tmp", base)
	if err := os.WriteFile(tmp, []byte(msg), 0o600); err != nil {
		return "", err
	}
	return base, os.Rename(tmp, filepath.Join(dir, "new", base))
}

// demoFlags sets a message's flags as Dovecot does: a rename in cur/ under
// the uidlist lock.
func demoFlags(root, mailbox, base, flags string) error {
	dir, err := maildir.Location{Root: root}.MailboxDir(mailbox)
	if err != nil {
		return err
	}
	lk, err := maildir.LockUidlist(context.Background(), dir, 10*time.Second)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	cur := findFile(dir, base)
	if cur == "" {
		return fmt.Errorf("demo: message %s not found", base)
	}
	src := filepath.Join(dir, "cur", cur)
	if _, err := os.Stat(src); err != nil {
		src = filepath.Join(dir, "new", cur)
	}
	return os.Rename(src, filepath.Join(dir, "cur", base+":2,"+flags))
}
