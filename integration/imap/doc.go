// Package imap tests twinbox beside two real Dovecot IMAP servers (issue 3), each test
// once with Dovecot 2.3 (subtest "2.3", the host's) and once with Dovecot 2.4 (subtest
// "2.4", from the Debian trixie root that scripts/dovecot24-chroot.sh builds; run with
// chroot in a private mount namespace, see integration/dovecot/chroot.go), through
// dovecot.ForEach. Each starts two private Dovecot instances (integration/dovecot.StartServer: the
// dovecot binary as root, its own config, base_dir, log, hostname, a loopback
// port, passwd-file auth, mail owned by the unprivileged user twinboxtest) whose Maildir++
// roots the real twinbox binary syncs, and judges the result with a real IMAP client
// (github.com/emersion/go-imap/v2): folder list, subscriptions, UIDVALIDITY, and per UID
// the body hash, flags and keywords, on both sides.
//
//   - ops_test.go: every client operation (APPEND, STORE add/remove of flags and keywords,
//     EXPUNGE, COPY, MOVE, CREATE, RENAME also with children, DELETE, SUBSCRIBE,
//     UNSUBSCRIBE), an MTA delivery into new/, and an rm -rf of a folder (restored), each
//     done on A and on B: after the sync both views are identical, the operation took
//     effect, and no cached UID changed its meaning.
//   - cope_test.go: folders that both Dovecots autocreated merge; Dovecot moving,
//     renaming and appending while a sync runs (exit 0 or 2, then convergence, nothing
//     lost).
//   - dirty_test.go: maildir_very_dirty_syncs and --flag-change-command (doveadm
//     force-resync).
//   - stress_test.go: 3 IMAP clients per side doing random operations (folder
//     CREATE/RENAME/DELETE included, serialised per side against the side's other client
//     commands; see TestConcurrentClientsAndSyncs) while twinbox sync runs in a loop (a
//     third of the runs killed with SIGKILL), then quiescence and the checks above, plus a
//     scan of both Dovecot logs.
//
// Environment:
//
//	TWINBOX_SEED=N             replay the stress test's random choices (printed on failure)
//	TWINBOX_LONG=1             400 steps per stress client instead of 40; 1000 messages in the busy test
//	TWINBOX_REQUIRE_DOVECOT=1  fail, not skip, when Dovecot (2.3 or the 2.4 root) or root is missing
//	TWINBOX_TRIXIE_ROOT=DIR    the Dovecot 2.4 root (default /var/cache/twinbox/trixie)
//	TWINBOX_TEST_BINARY=PATH   test this binary instead of building one
//
// The tests need root (the Dovecot master switches to the mail user) and skip without it.
package imap
