package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
)

func runSync(g *globals, user, a, b string, f syncFlags, backup bool) error {
	g.ssh = &f.sshFlags
	prog := newProgress(os.Stderr, f.JSON)
	p, err := openPairUser(g, user, a, b, f.IndexA, f.IndexB, replicaOptions{lockTimeout: f.LockTimeout, dryRun: f.DryRun, massMin: f.MassMin, massFrac: f.MassFraction, massExempt: f.MassExempt, flagCmd: g.flagChangeCommand(f.FlagChangeCmd)})
	if err != nil {
		return err
	}
	opt := session.Options{Backup: backup, DryRun: f.DryRun, Full: f.Full, AllowMassExpunge: f.AllowMassExpunge, Include: f.Include, Exclude: f.Exclude}
	if prog != nil {
		opt.Progress = prog
	}
	sum, err := session.Run(g.ctx, p.a, p.b, opt)
	if prog != nil {
		prog.done()
	}
	cerr := p.close()
	if err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	code := exitOK
	switch {
	case sum.Changed:
		code = exitChanged
	case len(sum.Held) > 0:
		code = exitHeld
	}
	if f.DryRun && sum.PlanText == nil {
		sum.PlanText = []string{} // an empty plan: report says "nothing to do"
	}
	report(os.Stdout, sum, f.JSON, p.roundTrips(), code, g.verbose)
	if code != exitOK {
		return exitCode(code)
	}
	return nil
}

// jsonSummary is the --json output.
type jsonSummary struct {
	*session.Summary
	RoundTrips int `json:"round_trips"`
	ExitCode   int `json:"exit_code"`
}

func report(w io.Writer, s *session.Summary, asJSON bool, rt, code int, verbose bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(jsonSummary{Summary: s, RoundTrips: rt, ExitCode: code})
		return
	}
	if s.PlanText != nil {
		fmt.Fprintf(w, "dry run: %s plan for %s and %s\n", s.Mode, s.A.Root, s.B.Root)
		for _, l := range s.PlanText {
			fmt.Fprintln(w, "  "+l)
		}
		if len(s.PlanText) == 0 {
			fmt.Fprintln(w, "  nothing to do")
		}
		return
	}
	fmt.Fprintf(w, "%s of %s and %s: %d mailboxes (%d compared in full) in %s\n", s.Mode, s.A.Root, s.B.Root, s.Mailboxes, s.Full, s.Duration.Round(1e6))
	for _, side := range []struct {
		name string
		r    *replica.ApplyResult
	}{{"A", s.ResultA}, {"B", s.ResultB}} {
		r := side.r
		if r == nil {
			continue
		}
		fmt.Fprintf(w, "  %s: +%d messages (%d fetched, %d linked, %s), %d expunged, %d flag changes, %d renumbered, %d mailbox changes\n",
			side.name, r.Added, r.Fetched, r.Linked, human(r.Bytes), r.Expunged, r.Flagged, r.Moved, r.MailboxOps)
		if verbose {
			for _, sk := range r.Skipped {
				fmt.Fprintf(w, "    skipped (changed during sync): %s\n", sk)
			}
		}
	}
	if s.Renumbered > 0 {
		fmt.Fprintf(w, "  %d messages got new UIDs (both replicas had used their UIDs)\n", s.Renumbered)
	}
	for _, m := range s.Merged {
		fmt.Fprintf(w, "  merged mailboxes created on both sides: %s\n", m)
	}
	for _, m := range s.Revalidated {
		fmt.Fprintf(w, "  new UIDVALIDITY for a mailbox whose name and UIDVALIDITY named another one: %s\n", m)
	}
	for _, h := range s.Held {
		fmt.Fprintf(w, "  HELD: %d expunges in %s look like a mass expunge and were not replicated; run with --allow-mass-expunge to replicate them\n", h.Count, h.Mailbox)
	}
	if s.Changed {
		fmt.Fprintln(w, "  the replicas changed during the sync: run it again")
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func runCheck(g *globals, c *CheckCmd) error {
	// check reads only: a throw-away copy of each index, nothing written
	// to the mail, and no replica made where a path was mistyped.
	g.ssh = &c.sshFlags
	a, b, err := replicaArgs(g, c.User, c.A, c.B)
	if err != nil {
		return err
	}
	for _, arg := range []string{a, b} {
		if e, err := parseEndpoint(g, arg, c.User); err == nil && e.local() {
			if fi, err := os.Stat(e.loc.Root); err != nil {
				return fmt.Errorf("%s: not a mail root: %w", arg, err)
			} else if !fi.IsDir() {
				return fmt.Errorf("%s: not a mail root: not a directory", arg)
			}
		}
	}
	p, err := openPairUser(g, c.User, a, b, "", "", replicaOptions{lockTimeout: c.LockTimeout, dryRun: true})
	if err != nil {
		return err
	}
	diffs, err := session.Check(g.ctx, p.a, p.b, session.Options{Include: c.Include, Exclude: c.Exclude})
	cerr := p.close()
	if err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			Identical   bool     `json:"identical"`
			Differences []string `json:"differences"`
		}{len(diffs) == 0, diffs})
	} else if len(diffs) == 0 {
		fmt.Println("identical")
	} else {
		for _, d := range diffs {
			fmt.Println(d)
		}
		fmt.Printf("%d differences\n", len(diffs))
	}
	if len(diffs) > 0 {
		return exitCode(exitError)
	}
	return nil
}
