// Command twinbox keeps a user's mail identical on two or more Maildir
// replicas, every one of them writable: master/master replication beside a
// running Dovecot. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	gosync "sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/twinbox-mail/twinbox/config"
	"github.com/twinbox-mail/twinbox/maildir"
)

// Exit codes, stable and documented (dsync's, plus 3).
const (
	exitOK      = 0
	exitError   = 1
	exitChanged = 2 // finished, but the replicas changed during the sync: run again
	exitHeld    = 3 // finished, but a mass expunge was held back: see the summary
)

var version = "dev"

const exitHelp = `Exit codes:
  0  synced (for check: identical)
  1  error (for check: the replicas differ)
  2  finished, but changes happened during the sync: run it again
  3  finished, but a mass expunge was held back (see the summary; release
     it with --allow-mass-expunge)`

// CLI is the command line.
type CLI struct {
	Verbose   bool   `short:"v" help:"Log what happens (to stderr)." env:"TWINBOX_VERBOSE"`
	Config    string `help:"Configuration file (default /etc/twinbox/twinbox.toml if it exists)." env:"TWINBOX_CONFIG" placeholder:"FILE"`
	ReplicaID string `name:"replica-id" help:"This host's replica ID (overrides replica_id in the configuration; default the host name)." placeholder:"ID"`

	Sync    SyncCmd    `cmd:"" help:"Two-way (master/master) sync of two replicas."`
	Backup  BackupCmd  `cmd:"" help:"One-way: make DST identical to SRC."`
	Check   CheckCmd   `cmd:"" help:"Report whether two replicas are identical (exit 1 if not)."`
	Serve   ServeCmd   `cmd:"" help:"Speak the sync protocol on stdin/stdout for one replica (the far end of a sync, dsync-server's role)."`
	Sshd    SshdCmd    `cmd:"" help:"Embedded SSH server that only ever serves the sync protocol (see docs/sshd.md)."`
	Listen  ListenCmd  `cmd:"" help:"tcp: and tcps: listener (shared secret, TLS 1.3; see docs/tcp.md)."`
	Wrapper WrapperCmd `cmd:"" help:"The forced command of an OpenSSH authorized_keys line: serves only the sync of the user the peer names."`
	Delete  DeleteCmd  `cmd:"" help:"Delete mailboxes with intent: removed here now, and deleted on the peers by the next sync (mail that arrived there since survives)."`
	Config_ ConfigCmd  `cmd:"" name:"config" help:"Check the configuration and print the settings in force."`
	Demo    DemoCmd    `cmd:"" help:"Make two replicas in a fresh directory, change both, sync, and show the result."`
	Version VersionCmd `cmd:"" help:"Print the version."`
}

// exitError carries an exit code out of a command.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func main() {
	if p := os.Getenv("TWINBOX_CPUPROFILE"); p != "" {
		// For performance work only.
		if f, err := os.Create(p); err == nil {
			_ = pprof.StartCPUProfile(f)
			code := run(os.Args[1:])
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(code)
		}
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var cli CLI
	parser, err := kong.New(&cli,
		kong.Name("twinbox"),
		kong.Description("Master/master replication of Maildir mail stores, beside Dovecot.\n\n"+exitHelp),
		kong.UsageOnError(),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "twinbox:", err)
		return exitError
	}
	code := exitOK
	func() {
		defer func() {
			if r := recover(); r != nil {
				if c, ok := r.(exitCode); ok {
					code = int(c)
					return
				}
				panic(r)
			}
		}()
		kctx, err := parser.Parse(args)
		if err != nil {
			parser.Errorf("%s", err)
			code = exitError
			return
		}
		// Syncs hold large plans briefly; a tighter GC keeps the peak RSS
		// nearer the live heap. (A soft memory limit near the peak live
		// heap of a 50k first sync made the runtime scavenge constantly:
		// twice the system time, measured.)
		if os.Getenv("GOGC") == "" {
			tightenGCWhenLarge()
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		level := slog.LevelWarn
		if cli.Verbose {
			level = slog.LevelInfo
		}
		if os.Getenv("TWINBOX_DEBUG") != "" {
			level = slog.LevelDebug // every file twinbox names or numbers (for tests)
		}
		g := &globals{ctx: ctx, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), verbose: cli.Verbose, configPath: cli.Config, replicaID: cli.ReplicaID}
		err = kctx.Run(g)
		var ec exitCode
		switch {
		case errors.As(err, &ec):
			code = int(ec)
		case err != nil:
			fmt.Fprintln(os.Stderr, "twinbox:", err)
			code = exitError
		}
	}()
	return code
}

// globals is what every command gets.
type globals struct {
	ctx     context.Context
	log     *slog.Logger
	verbose bool

	configPath, replicaID string
	cfg                   *config.Config
	ssh                   *sshFlags
}

// specialUse looks up a mailbox's special-use flags in Dovecot's
// configuration (dovecot_config; `doveconf -n`), read once, when a scan
// first asks (only a suspected mass expunge does). nil when dovecot_config
// is "none" or doveconf is not installed: the exemption then goes by name.
func (g *globals) specialUse() func(string) []string {
	file := ""
	if cfg, err := g.config(); err == nil {
		file = cfg.DovecotConfig
	}
	if file == "none" {
		return nil
	}
	doveconf, err := exec.LookPath("doveconf")
	if err != nil {
		return nil
	}
	var once gosync.Once
	var special map[string][]string
	return func(name string) []string {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(g.ctx, 10*time.Second)
			defer cancel()
			var err error
			if special, err = maildir.DoveconfSpecialUse(ctx, doveconf, file); err != nil {
				g.log.Warn("reading the special-use flags of Dovecot's configuration (set dovecot_config, or \"none\"); the mass-expunge exemption goes by name", "err", err)
			}
		})
		return special[name]
	}
}

// flagChangeCommand is the --flag-change-command flag, else the
// configuration's flag_change_command (a broken configuration is reported
// by whatever needs it; here it means none).
func (g *globals) flagChangeCommand(flag string) string {
	if flag != "" {
		return flag
	}
	if cfg, err := g.config(); err == nil {
		return cfg.FlagChangeCommand
	}
	return ""
}

// config loads the configuration once (see package config).
func (g *globals) config() (*config.Config, error) {
	if g.cfg != nil {
		return g.cfg, nil
	}
	c, err := config.Load(g.configPath)
	if err != nil {
		return nil, err
	}
	if g.replicaID != "" {
		c.Set("replica_id", g.replicaID)
		if err := c.Check(); err != nil {
			return nil, err
		}
	}
	g.cfg = c
	return c, nil
}

// VersionCmd prints the version.
type VersionCmd struct{}

func (VersionCmd) Run(g *globals) error {
	fmt.Println("twinbox", version)
	return nil
}

// syncFlags are shared by sync and backup.
type syncFlags struct {
	Exclude          []string      `help:"Skip mailboxes matching PATTERN (* any, % any but /); repeatable." placeholder:"PATTERN" env:"TWINBOX_EXCLUDE"`
	Include          []string      `help:"Only mailboxes matching PATTERN; repeatable." placeholder:"PATTERN" env:"TWINBOX_INCLUDE"`
	Full             bool          `help:"Ignore the saved sync state and compare everything." env:"TWINBOX_FULL"`
	DryRun           bool          `name:"dry-run" help:"Print the plan and change nothing." env:"TWINBOX_DRY_RUN"`
	LockTimeout      time.Duration `name:"lock-timeout" default:"30s" help:"How long to wait for the replicas' locks." env:"TWINBOX_LOCK_TIMEOUT"`
	AllowMassExpunge bool          `name:"allow-mass-expunge" help:"Replicate expunges held back as a mass expunge." env:"TWINBOX_ALLOW_MASS_EXPUNGE"`
	MassMin          int           `name:"mass-expunge-min" default:"50" help:"Hold expunges back when a scan finds more than this many messages of a mailbox gone" env:"TWINBOX_MASS_EXPUNGE_MIN"`
	MassFraction     float64       `name:"mass-expunge-fraction" default:"0.5" help:"and more than this fraction of the mailbox." env:"TWINBOX_MASS_EXPUNGE_FRACTION"`
	MassExempt       []string      `name:"mass-expunge-exempt" help:"Mailbox patterns never held back (default: Trash, Junk, Spam, Deleted Messages/Items at any level)." placeholder:"PATTERN" env:"TWINBOX_MASS_EXPUNGE_EXEMPT"`
	JSON             bool          `name:"json" help:"Print a machine-readable summary on stdout." env:"TWINBOX_JSON"`
	FlagChangeCmd    string        `name:"flag-change-command" help:"After a sync that changed flags on a local replica, run /bin/sh -c CMD with TWINBOX_ROOT, TWINBOX_USER and TWINBOX_MAILBOXES set (e.g. doveadm force-resync, for maildir_very_dirty_syncs; default flag_change_command in the configuration)." placeholder:"CMD" env:"TWINBOX_FLAG_CHANGE_COMMAND"`
	IndexA           string        `name:"index-a" help:"Index file of the first replica (default: <root>/twinbox.db)." env:"TWINBOX_INDEX_A"`
	IndexB           string        `name:"index-b" help:"Index file of the second replica (default: <root>/twinbox.db)." env:"TWINBOX_INDEX_B"`
	sshFlags
}

// replicaHelp describes the replica arguments.
const replicaHelp = "A replica is a Maildir root, maildir:PATH[:LAYOUT=fs][:UTF8][:INDEX=DIR], exec:COMMAND (a program speaking the protocol on stdio), remote:[LOGIN@]HOST[:PORT] (OpenSSH runs ssh.command: `twinbox serve -u USER` there), or remoteprefix:[LOGIN@]HOST[:PORT] (the same for a `twinbox wrapper` forced command), ssh://[LOGIN@]HOST[:PORT] (the built-in SSH client, host key checked against known_hosts; for `twinbox sshd` or any sshd), tcp:HOST[:PORT] (shared secret, encrypted; port 8946) or tcps:HOST[:PORT] (TLS 1.3 and the shared secret), both to `twinbox listen`. With -u USER the first replica is USER's mail on this host (from the configured user source) and the one argument is the peer (default: peer in the configuration)."

// SyncCmd is `twinbox sync A B` or `twinbox sync -u USER [PEER]`.
type SyncCmd struct {
	User string `short:"u" help:"The mail user: their replica here (from the user source) syncs with PEER." placeholder:"USER"`
	A    string `arg:"" optional:"" help:"First replica (or, with -u, the peer)."`
	B    string `arg:"" optional:"" help:"Second replica."`
	syncFlags
}

func (c *SyncCmd) Run(g *globals) error {
	a, b, err := replicaArgs(g, c.User, c.A, c.B)
	if err != nil {
		return err
	}
	return runSync(g, c.User, a, b, c.syncFlags, false)
}

// BackupCmd is `twinbox backup SRC DST`.
type BackupCmd struct {
	User string `short:"u" help:"The mail user: their replica here is the source, PEER the destination." placeholder:"USER"`
	Src  string `arg:"" optional:"" help:"Source replica (or, with -u, the destination peer)."`
	Dst  string `arg:"" optional:"" help:"Destination replica: becomes identical to SRC."`
	syncFlags
}

func (c *BackupCmd) Run(g *globals) error {
	a, b, err := replicaArgs(g, c.User, c.Src, c.Dst)
	if err != nil {
		return err
	}
	return runSync(g, c.User, a, b, c.syncFlags, true)
}

// CheckCmd is `twinbox check A B`.
type CheckCmd struct {
	User        string        `short:"u" help:"The mail user: compare their replica here with PEER." placeholder:"USER"`
	A           string        `arg:"" optional:"" help:"First replica (or, with -u, the peer)."`
	B           string        `arg:"" optional:"" help:"Second replica."`
	Exclude     []string      `help:"Skip mailboxes matching PATTERN; repeatable." placeholder:"PATTERN"`
	Include     []string      `help:"Only mailboxes matching PATTERN; repeatable." placeholder:"PATTERN"`
	LockTimeout time.Duration `name:"lock-timeout" default:"30s" help:"How long to wait for the replicas' locks." env:"TWINBOX_LOCK_TIMEOUT"`
	JSON        bool          `name:"json" help:"Print the differences as JSON."`
	sshFlags
}

func (c *CheckCmd) Run(g *globals) error { return runCheck(g, c) }

// ServeCmd is `twinbox serve`.
type ServeCmd struct {
	Root          string        `help:"The replica to serve: a Maildir root or maildir:PATH[:LAYOUT=fs][:UTF8][:INDEX=DIR]." env:"TWINBOX_ROOT" xor:"who"`
	User          string        `short:"u" help:"Serve this user's replica (from the configured user source); as root, run as the mail's owner." xor:"who" placeholder:"USER"`
	UserPrefix    bool          `name:"user-prefix" help:"Read the user name from the first line of stdin (remoteprefix:)." xor:"who"`
	FlagChangeCmd string        `name:"flag-change-command" help:"After a sync that changed flags on the replica, run /bin/sh -c CMD with TWINBOX_ROOT, TWINBOX_USER and TWINBOX_MAILBOXES set (e.g. doveadm force-resync, for maildir_very_dirty_syncs; default flag_change_command in the configuration)." placeholder:"CMD" env:"TWINBOX_FLAG_CHANGE_COMMAND"`
	Index         string        `help:"Index file (default: <root>/twinbox.db)." env:"TWINBOX_INDEX"`
	LockTimeout   time.Duration `name:"lock-timeout" default:"30s" help:"How long to wait for the replica's lock." env:"TWINBOX_LOCK_TIMEOUT"`
}

func (c *ServeCmd) Run(g *globals) error { return runServe(g, c) }

// largeHeap is the live heap past which the GC runs at GOGC=50.
const largeHeap = 16 << 20

// gcMark is watched by a finalizer that runs after each collection (it has
// a pointer field, so it is never batched with other tiny objects, whose
// finalizers may not run).
type gcMark struct{ _ *byte }

// tightenGCWhenLarge keeps the default GOGC=100 while the live heap is
// small, and sets GOGC=50 after the first collection that finds more than
// largeHeap live. A small sync (every incremental one: a few MB allocated
// in all) then collects once or never; with GOGC=50 from the start its
// 2 MB minimum heap goal made it collect one to three times (about half a
// millisecond each). A first sync of a large mailbox set still runs with
// the tighter GC where its peak is.
func tightenGCWhenLarge() {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var arm func()
	arm = func() {
		runtime.SetFinalizer(&gcMark{}, func(*gcMark) {
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 && sample[0].Value.Uint64() > largeHeap {
				debug.SetGCPercent(50)
				return
			}
			arm()
		})
	}
	arm()
}
