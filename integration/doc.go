// Package integration holds twinbox's whole-binary tests (tier 5 of the test
// style): they build the real binary once (TestMain), run it as a user would,
// and judge the result from outside.
//
//   - crash_test.go: SIGKILL of either process of a large sync at seeded random
//     moments, then reruns until the replicas converge; afterwards nothing is
//     lost or duplicated, no temporary file or lock is left, every
//     dovecot-uidlist is valid and a further sync has nothing to do
//     (contract §6). TWINBOX_SEED=N replays a run's kill moments and mail;
//     TWINBOX_LONG=1 kills more often.
//   - judge_test.go: scenario histories synced by the binary, then both
//     replicas read by Dovecot's doveadm (package integration/dovecot), which
//     must see the same mail and complain about nothing (contract §7). Skipped
//     without Dovecot unless TWINBOX_REQUIRE_DOVECOT=1.
//   - cli_test.go: exit codes and output of sync, backup, check and demo.
//
// The package has no non-test code besides this comment.
package integration
