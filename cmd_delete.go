package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/maildir"
)

// DeleteCmd is `twinbox delete ROOT MAILBOX...` or `twinbox delete -u USER MAILBOX...`.
type DeleteCmd struct {
	User        string        `short:"u" help:"The mail user whose replica here (from the user source) holds the mailboxes." placeholder:"USER"`
	Args        []string      `arg:"" name:"root-and-mailboxes" help:"ROOT MAILBOX... (with -u: MAILBOX...). Names as IMAP shows them, with / between levels."`
	Index       string        `help:"Index file (default: <root>/twinbox.db)." env:"TWINBOX_INDEX"`
	LockTimeout time.Duration `name:"lock-timeout" default:"30s" help:"How long to wait for the replica's lock." env:"TWINBOX_LOCK_TIMEOUT"`
	DryRun      bool          `name:"dry-run" help:"Say what would be deleted and change nothing."`
	JSON        bool          `name:"json" help:"Print what was deleted as JSON."`
}

func (c *DeleteCmd) Run(g *globals) error {
	root, names := "", c.Args
	if c.User == "" {
		if len(c.Args) < 2 {
			return errors.New("give the replica and at least one mailbox: twinbox delete ROOT MAILBOX... (or -u USER MAILBOX...)")
		}
		root, names = c.Args[0], c.Args[1:]
	} else {
		cfg, err := g.config()
		if err != nil {
			return err
		}
		us, err := cfg.UserSource()
		if err != nil {
			return err
		}
		u, err := us.Lookup(g.ctx, c.User)
		if err != nil {
			return err
		}
		root = u.Location
	}
	loc, err := maildir.ParseLocation(root)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(loc.Root); err != nil {
		return fmt.Errorf("%s: not a mail root: %w", root, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%s: not a mail root: not a directory", root)
	}
	r, err := index.Open(g.ctx, loc, index.Options{User: c.User, IndexPath: c.Index, LockTimeout: c.LockTimeout, Logger: g.log, DryRun: c.DryRun})
	if err != nil {
		return err
	}
	var done []*index.DeleteResult
	var failed error
	for _, n := range names {
		res, err := r.DeleteMailbox(g.ctx, n)
		if err != nil {
			failed = errors.Join(failed, err)
			continue
		}
		done = append(done, res)
	}
	if err := r.Close(); err != nil {
		failed = errors.Join(failed, err)
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			DryRun  bool                  `json:"dry_run"`
			Deleted []*index.DeleteResult `json:"deleted"`
		}{c.DryRun, done})
	} else {
		verb := "deleted"
		if c.DryRun {
			verb = "would delete"
		}
		for _, d := range done {
			fmt.Printf("%s %q (%d messages); the next sync deletes it on the peers, unless mail arrived there since\n", verb, d.Mailbox, d.Messages)
		}
	}
	return failed
}
