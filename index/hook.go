package index

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// FlagChangeHookTimeout bounds one run of the flag-change hook.
const FlagChangeHookTimeout = 2 * time.Minute

// The flag-change hook (Options.FlagChangeCommand) exists for Dovecot's
// maildir_very_dirty_syncs: with it Dovecot does not rescan cur/ on its
// own, so flag changes that twinbox makes by renaming files in cur/ stay
// invisible to IMAP clients until something forces a resync. After a sync
// that renamed files for flag changes on this replica, the command runs as
// `/bin/sh -c CMD` with
//
//	TWINBOX_ROOT       the replica's mail root
//	TWINBOX_USER       the user (empty for an ad-hoc root)
//	TWINBOX_MAILBOXES  the mailboxes whose flags changed, one per line
//
// for example `doveadm force-resync -u "$TWINBOX_USER" '*'`. It runs after
// the commit of a successful sync, or at Close when no commit came (a
// sync that exited 2 renamed its files all the same). Its output goes to
// the log; a failure is logged as a warning and does not change the sync's
// result.

// noteFlagChange records that an apply renamed a file of mailbox name for
// a flag change.
func (r *Replica) noteFlagChange(name string) {
	if r.opt.FlagChangeCommand == "" {
		return
	}
	if r.flagBoxes == nil {
		r.flagBoxes = map[string]bool{}
	}
	r.flagBoxes[name] = true
}

// runFlagChangeHook runs the flag-change hook for the mailboxes noted
// since its last run, if any.
func (r *Replica) runFlagChangeHook(ctx context.Context) {
	if r.opt.FlagChangeCommand == "" || len(r.flagBoxes) == 0 {
		return
	}
	names := make([]string, 0, len(r.flagBoxes))
	for n := range r.flagBoxes {
		names = append(names, n)
	}
	sort.Strings(names)
	r.flagBoxes = nil
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FlagChangeHookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", r.opt.FlagChangeCommand)
	cmd.Env = append(os.Environ(),
		"TWINBOX_ROOT="+r.loc.Root,
		"TWINBOX_USER="+r.opt.User,
		"TWINBOX_MAILBOXES="+strings.Join(names, "\n"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if len(text) > 4000 {
		text = text[:4000] + "..."
	}
	if err != nil {
		r.log.Warn("flag-change command failed", "root", r.loc.Root, "mailboxes", len(names), "error", err, "output", text)
		return
	}
	r.log.Info("flag-change command ran", "root", r.loc.Root, "mailboxes", len(names), "output", text)
}

// testHookListing, if set, sees every listing of a mailbox's cur/ or new/
// (SetListingHook).
var testHookListing func(dir, sub string, names []string) []string

// SetListingHook makes every listing of a mailbox's cur/ or new/ (the
// scan's and the apply's; cur/ is read first) pass the names it read
// through f, with the mailbox directory and "cur" or "new", and go on with
// the names f returns. f may drop a name (a readdir that missed a file
// Dovecot renamed meanwhile) or act on the directory (Dovecot moving a
// file from new/ to cur/ after cur/ was read: both listings miss it).
// Fault injection for tests of other packages (the property test in
// sync/session); not safe for concurrent use. It returns the function
// that removes it.
func SetListingHook(f func(dir, sub string, names []string) []string) func() {
	testHookListing = f
	return func() { testHookListing = nil }
}
