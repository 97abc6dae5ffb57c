package index

import (
	"context"
	"errors"
	"fmt"
	bolt "go.etcd.io/bbolt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinbox-mail/twinbox/maildir"
)

// Options configure a local replica. The zero value is usable.
type Options struct {
	// User names the replica's owner in errors and logs ("" for ad-hoc paths).
	User string
	// IndexPath is the index file; default <root>/twinbox.db.
	IndexPath string
	// LockTimeout bounds the wait for the replica's lock and Dovecot's
	// dotlocks (default 30s).
	LockTimeout time.Duration
	// MassExpungeMin and MassExpungeFraction define a mass expunge: more
	// than Min messages and more than Fraction of a mailbox gone in one scan
	// (defaults 50 and 0.5). Mailboxes matching MassExpungeExempt (default:
	// named Trash, Junk, Spam, Deleted Messages, Deleted Items, at any
	// level) and those whose SpecialUse includes \Trash or \Junk are
	// never held.
	MassExpungeMin      int
	MassExpungeFraction float64
	MassExpungeExempt   func(name string) bool
	// SpecialUse, if set, returns a mailbox's special-use flags (from
	// Dovecot's configuration: maildir.DoveconfSpecialUse). It is asked
	// only when a scan finds a mass expunge.
	SpecialUse func(name string) []string
	// AllowMassExpunge releases held expunges and lets this scan's through.
	AllowMassExpunge bool
	// Hostname goes into the names of files this replica creates.
	Hostname string
	Logger   *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
	// Progress, if set, hears of every body fetched.
	Progress Progress
	// DryRun opens a throw-away copy of the index and makes the scan write
	// nothing to the mail store (UIDs for new files are assigned in the
	// copy only). Apply must not be called.
	DryRun bool
	// ReplicaID identifies this replica to peers (default: derived from
	// the index's random identity, unique per root).
	ReplicaID string
	// FlagChangeCommand, if set, runs as `/bin/sh -c FlagChangeCommand`
	// after a sync that changed flags on this replica (see hook.go), so
	// that a Dovecot with maildir_very_dirty_syncs notices them.
	FlagChangeCommand string
	// BeforeBoxCommit, if set, is called by Apply with a mailbox's
	// directory after its files and control files are written, before the
	// index records them, and whether that work rewrote the mailbox (an
	// adopt or a backup reset): fault injection for tests (a panic there
	// stands for a kill).
	BeforeBoxCommit func(dir string, rewrite bool)
	// BeforeApplyBox, if set, is called by Apply with a mailbox's
	// directory before it takes that mailbox's uidlist lock to work in
	// it: fault injection for tests (Dovecot acting between a sync's scan
	// and its apply, or while the apply works in other mailboxes).
	BeforeApplyBox func(dir string)
}

// Replica is one user's Maildir root and its index, opened for a sync. It
// holds the replica's lock from Open to Close.
type Replica struct {
	loc   maildir.Location
	opt   Options
	store *Store
	log   *slog.Logger
	// scanAt is when the running scan began (stampClock): the stamps it
	// keeps are settled against it.
	scanAt int64
	// renumbered holds, by new base name, the old base name of each file
	// a killed apply renumbered and its uidlist already lists (the
	// renumber journal at Open, renumber.go): the scan reads such a file
	// at its new UID as the same message renumbered, not a new copy.
	renumbered map[string]string
	seq        uint64
	// flagBoxes are the mailboxes whose files an apply renamed for flag
	// changes and that the flag-change hook has not been told of yet.
	flagBoxes map[string]bool
	// inApply and applyMarked: an apply runs, and its dirty_apply mark is
	// committed (markApplying).
	inApply, applyMarked bool
	// tmpRecorded: the tmp/ directories (of mailboxes) the running apply
	// recorded as dirty_tmp up front (recordTmpDirs).
	tmpRecorded map[string]bool
}

// Open locks and opens the replica at loc.
func Open(ctx context.Context, loc maildir.Location, opt Options) (*Replica, error) {
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = 30 * time.Second
	}
	if opt.MassExpungeMin <= 0 {
		opt.MassExpungeMin = 50
	}
	if opt.MassExpungeFraction <= 0 {
		opt.MassExpungeFraction = 0.5
	}
	if opt.MassExpungeExempt == nil {
		opt.MassExpungeExempt = DefaultExempt
	}
	if opt.Hostname == "" {
		opt.Hostname, _ = os.Hostname()
		if opt.Hostname == "" {
			opt.Hostname = "localhost"
		}
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.IndexPath == "" {
		opt.IndexPath = filepath.Join(loc.Root, DBName)
	}
	if !opt.DryRun {
		if err := os.MkdirAll(loc.Root, 0o700); err != nil {
			return nil, fmt.Errorf("%s: creating root: %w", describe(opt.User, loc.Root), err)
		}
	}
	path := opt.IndexPath
	if opt.DryRun {
		cp, err := copyIndex(opt.IndexPath, opt.LockTimeout)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", describe(opt.User, loc.Root), err)
		}
		path = cp
	}
	st, err := openStore(path, opt.LockTimeout)
	if opt.DryRun {
		os.Remove(path) // the open store keeps it until Close
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe(opt.User, loc.Root), err)
	}
	st.now = opt.Now
	log := opt.Logger
	if opt.User != "" {
		log = log.With("user", opt.User)
	}
	r := &Replica{loc: loc, opt: opt, store: st, log: log}
	if opt.DryRun {
		return r, nil
	}
	if err := r.cleanTmp(); err != nil {
		st.Close()
		return nil, err
	}
	if err := r.replayRenumbers(ctx); err != nil {
		st.Close()
		return nil, err
	}
	// Directories a killed twinbox was building or removing under hidden
	// names (maildir.HiddenPrefix): no one else uses them while we hold
	// the replica's lock.
	if err := loc.CleanHidden(); err != nil {
		r.log.Warn("removing leftover temporary directories", "root", loc.Root, "error", err)
	}
	_ = ctx
	return r, nil
}

// Close runs the flag-change hook for flag changes no commit reported
// (a sync that exited 2 still renamed the files), then releases the
// replica's lock.
func (r *Replica) Close() error {
	r.runFlagChangeHook(context.Background())
	r.verifyOnClose()
	return r.store.Close()
}

// IndexID is the index's identity.
func (r *Replica) IndexID() string { return r.store.IndexID() }

// Location is the replica's mail location.
func (r *Replica) Location() maildir.Location { return r.loc }

func describe(user, root string) string {
	if user != "" {
		return fmt.Sprintf("user %s (%s)", user, root)
	}
	return root
}

// errf makes an error that names the user/root and the mailbox.
func (r *Replica) errf(mailbox string, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if mailbox == "" {
		return fmt.Errorf("%s: %s", describe(r.opt.User, r.loc.Root), msg)
	}
	return fmt.Errorf("%s mailbox %q: %s", describe(r.opt.User, r.loc.Root), mailbox, msg)
}

func (r *Replica) wrap(mailbox string, err error) error {
	if err == nil {
		return nil
	}
	if mailbox == "" {
		return fmt.Errorf("%s: %w", describe(r.opt.User, r.loc.Root), err)
	}
	return fmt.Errorf("%s mailbox %q: %w", describe(r.opt.User, r.loc.Root), mailbox, err)
}

// DefaultExempt reports whether a mailbox is exempt from the mass-expunge
// guard by its usual name.
func DefaultExempt(name string) bool {
	last := name
	if i := strings.LastIndex(name, "/"); i >= 0 {
		last = name[i+1:]
	}
	switch strings.ToLower(last) {
	case "trash", "junk", "spam", "deleted messages", "deleted items", "junk e-mail", "junk email":
		return true
	}
	return false
}

// ErrChanged is wrapped by results that saw the replica change during the
// sync: the sync finished, but should run again.
var ErrChanged = errors.New("mailbox changed during sync")

// copyIndex copies the index at path (if any) to a temporary file, under
// the index's lock, for a dry run.
func copyIndex(path string, timeout time.Duration) (string, error) {
	f, err := os.CreateTemp("", "twinbox-dryrun-*.db")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	f.Close()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		os.Remove(tmp)
		return tmp, nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: max(timeout, time.Millisecond)})
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, bolt.ErrTimeout) {
			return "", fmt.Errorf("opening index %s: %w", path, ErrLocked)
		}
		return "", fmt.Errorf("opening index %s: %w", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error { return tx.CopyFile(tmp, 0o600) })
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}
