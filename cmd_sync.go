package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/wire"
)

// endpoint is one parsed replica argument.
type endpoint struct {
	arg  string
	loc  maildir.Location
	exec string // exec:COMMAND
}

func parseEndpoint(s string) (endpoint, error) {
	if strings.HasPrefix(s, "exec:") {
		cmd := strings.TrimSpace(strings.TrimPrefix(s, "exec:"))
		if cmd == "" {
			return endpoint{}, fmt.Errorf("%q: empty command", s)
		}
		return endpoint{arg: s, exec: cmd}, nil
	}
	loc, err := maildir.ParseLocation(s)
	if err != nil {
		return endpoint{}, err
	}
	return endpoint{arg: s, loc: loc}, nil
}

// pair holds two opened replicas and how to release them.
type pair struct {
	a, b    replica.Replica
	clients []*wire.Client
	closers []func() error
}

func (p *pair) close() error {
	var first error
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// roundTrips sums the protocol round trips of the remote sides.
func (p *pair) roundTrips() int {
	n := 0
	for _, c := range p.clients {
		n += c.RoundTrips
	}
	return n
}

// openPair opens both replicas. A local pair runs the second replica's
// server in process over a pipe, through the same protocol a remote peer
// uses; the locks are taken in root order so that two syncs of the same
// pair started at once serialise instead of deadlocking.
// replicaOptions are the index options every opened replica gets.
type replicaOptions struct {
	lockTimeout timeoutT
	dryRun      bool
	massMin     int
	massFrac    float64
	massExempt  []string
	flagCmd     string
}

func (o replicaOptions) index(g *globals, idx string) index.Options {
	opt := index.Options{IndexPath: idx, LockTimeout: o.lockTimeout, Logger: g.log, DryRun: o.dryRun, MassExpungeMin: o.massMin, MassExpungeFraction: o.massFrac, FlagChangeCommand: o.flagCmd}
	if len(o.massExempt) > 0 {
		pats := o.massExempt
		opt.MassExpungeExempt = func(name string) bool {
			for _, p := range pats {
				if session.Match(p, name) {
					return true
				}
			}
			return false
		}
	}
	return opt
}

func openPair(g *globals, a, b string, indexA, indexB string, ro replicaOptions) (*pair, error) {
	ea, err := parseEndpoint(a)
	if err != nil {
		return nil, err
	}
	eb, err := parseEndpoint(b)
	if err != nil {
		return nil, err
	}
	p := &pair{}
	openLocal := func(e endpoint, idx string) (replica.Replica, error) {
		r, err := index.Open(g.ctx, e.loc, ro.index(g, idx))
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	openRemote := func(e endpoint, idx string, self replica.Info) (replica.Replica, error) {
		if e.exec != "" {
			conn, err := transport.Command(g.ctx, []string{"/bin/sh", "-c", e.exec})
			if err != nil {
				return nil, err
			}
			cl, err := wire.Dial(g.ctx, conn, "", self)
			if err != nil {
				conn.Close()
				return nil, fmt.Errorf("%s: %w", e.arg, err)
			}
			p.clients = append(p.clients, cl)
			p.closers = append(p.closers, cl.Close)
			return cl, nil
		}
		open := func(ctx contextT, user string, peer replica.Info) (replica.Replica, error) {
			return index.Open(ctx, e.loc, ro.index(g, idx))
		}
		cl, wait, err := transport.ServeInProcess(g.ctx, "", self, open, g.log)
		if err != nil {
			return nil, err
		}
		p.clients = append(p.clients, cl)
		p.closers = append(p.closers, func() error {
			err := cl.Close()
			if werr := wait(); err == nil {
				err = werr
			}
			return err
		})
		return cl, nil
	}
	switch {
	case ea.exec == "" && eb.exec == "":
		// Lock order: the lower root first.
		first, second := &p.a, &p.b
		fe, se, fi, si := ea, eb, indexA, indexB
		swapped := eb.loc.Root < ea.loc.Root
		if swapped {
			first, second, fe, se, fi, si = &p.b, &p.a, eb, ea, indexB, indexA
		}
		if !swapped {
			r, err := openLocal(fe, fi)
			if err != nil {
				return nil, err
			}
			p.closers = append(p.closers, r.Close)
			*first = r
			c, err := openRemote(se, si, r.Info())
			if err != nil {
				p.close()
				return nil, err
			}
			*second = c
		} else {
			// The in-process server must take its lock first.
			c, err := openRemote(fe, fi, replica.Info{ReplicaID: "local-client"})
			if err != nil {
				return nil, err
			}
			*first = c
			r, err := openLocal(se, si)
			if err != nil {
				p.close()
				return nil, err
			}
			p.closers = append(p.closers, r.Close)
			*second = r
		}
	case ea.exec == "":
		r, err := openLocal(ea, indexA)
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, r.Close)
		p.a = r
		if p.b, err = openRemote(eb, indexB, r.Info()); err != nil {
			p.close()
			return nil, err
		}
	case eb.exec == "":
		r, err := openLocal(eb, indexB)
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, r.Close)
		p.b = r
		if p.a, err = openRemote(ea, indexA, r.Info()); err != nil {
			p.close()
			return nil, err
		}
	default:
		if p.a, err = openRemote(ea, indexA, replica.Info{ReplicaID: "relay"}); err != nil {
			return nil, err
		}
		if p.b, err = openRemote(eb, indexB, replica.Info{ReplicaID: "relay"}); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

func runSync(g *globals, a, b string, f syncFlags, backup bool) error {
	prog := newProgress(os.Stderr, f.JSON)
	p, err := openPair(g, a, b, f.IndexA, f.IndexB, replicaOptions{lockTimeout: f.LockTimeout, dryRun: f.DryRun, massMin: f.MassMin, massFrac: f.MassFraction, massExempt: f.MassExempt, flagCmd: f.FlagChangeCmd})
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
	for _, arg := range []string{c.A, c.B} {
		if e, err := parseEndpoint(arg); err == nil && e.exec == "" {
			if fi, err := os.Stat(e.loc.Root); err != nil {
				return fmt.Errorf("%s: not a mail root: %w", arg, err)
			} else if !fi.IsDir() {
				return fmt.Errorf("%s: not a mail root: not a directory", arg)
			}
		}
	}
	p, err := openPair(g, c.A, c.B, "", "", replicaOptions{lockTimeout: c.LockTimeout, dryRun: true})
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

func runServe(g *globals, c *ServeCmd) error {
	loc, err := maildir.ParseLocation(c.Root)
	if err != nil {
		return err
	}
	open := func(ctx contextT, user string, peer replica.Info) (replica.Replica, error) {
		return index.Open(ctx, loc, index.Options{User: user, IndexPath: c.Index, LockTimeout: c.LockTimeout, Logger: g.log, FlagChangeCommand: c.FlagChangeCmd})
	}
	err = wire.Serve(g.ctx, stdio{}, open, g.log)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// stdio is our stdin and stdout as one stream.
type stdio struct{}

func (stdio) Read(b []byte) (int, error)  { return os.Stdin.Read(b) }
func (stdio) Write(b []byte) (int, error) { return os.Stdout.Write(b) }
