// Package integration holds twinbox's whole-binary tests (tier 5 of the test
// style): TestMain builds the real binary once, the tests run it as a user
// would and judge the result from outside, with their own Maildir parsers
// (inspect_test.go) and with Dovecot's doveadm (package integration/dovecot).
//
//   - crash_test.go: SIGKILL of either process of a large sync (the client of
//     `sync A B`, the `serve` child of `sync A exec:...`, or that child's
//     client) at seeded random moments, then reruns until the replicas
//     converge; afterwards nothing delivered is lost or duplicated, flags and
//     expunges took effect, no temporary file or lock is left, every
//     dovecot-uidlist is valid, the replicas are identical, and one more sync
//     has nothing to do (contract §6).
//   - concurrent_test.go: deliveries, flag changes and Dovecot reads while a
//     sync runs (contract §6 and §7).
//   - judge_test.go: scenario histories synced by the binary, then both
//     replicas read by Dovecot, which must see the same mail and complain
//     about nothing; and Dovecot working on the replicas between syncs
//     (contract §7).
//   - owner_test.go: a sync run as root keeps the Maildirs' owner.
//   - cli_test.go: exit codes and output of sync, backup, check and demo;
//     config_test.go: `config check`, bad users and hosts.
//   - openssh_test.go: a real OpenSSH sshd on loopback: remote: as the mail
//     user, remoteprefix:/remote: through `twinbox wrapper` as root's forced
//     command, refusals, and syncs started at once from both ends (lock
//     order). sshd_test.go: `twinbox sshd` with ssh:// and OpenSSH's client.
//     tcp_test.go: `twinbox listen` with tcp: and tcps: (a test CA).
//   - netns_test.go: two hosts in network namespaces with their own host
//     names, syncing both ways at once; a large sync over a slow veth cut by
//     link-down and by killing the far serve.
//   - imap/: two Dovecot IMAP servers and go-imap clients (issue 3).
//
// Environment:
//
//	TWINBOX_SEED=N             replay a run's random mail and kill moments (logged by each test)
//	TWINBOX_LONG=1             larger syncs and five times as many kills
//	TWINBOX_REQUIRE_DOVECOT=1  fail, not skip, the Dovecot, OpenSSH and namespace tests when what they need is missing
//	TWINBOX_TEST_BINARY=PATH   test this binary instead of building one
//
// The package has no code besides this comment: everything is in _test.go
// files.
package integration
