// Package sshd is twinbox's embedded SSH server (gliderlabs/ssh over
// golang.org/x/crypto/ssh). It only ever serves the sync protocol: a
// client authenticates with a public key listed in an authorized keys file
// and runs exactly `twinbox serve -u USER`; the server then calls
// Config.Serve with the session's stdin and stdout.
//
// The contract:
//
//  1. Host key: HostKeyPath, created at first start (ed25519, mode 0600,
//     public half in HostKeyPath.pub); a key group or others can access,
//     or one that does not parse, stops New with an error. The SHA256
//     fingerprint is logged at start.
//  2. Authentication: public keys only. The key must be on a line of the
//     authorized keys file (OpenSSH syntax) whose from= (if any) allows
//     the source address and which has a users= option. A line with an
//     option twinbox does not know is refused and logged (file and line);
//     the file is read again whenever its stat changes, and a file that
//     group or others may write refuses every key.
//  3. Session: one session channel per connection; in it only an exec
//     request of "twinbox serve -u USER" (or "serve -u USER") with a valid
//     user name, checked again against the file as it is then (key still
//     listed, from= still matching, users= allowing USER). pty, shell,
//     subsystem, env, X11 and agent requests, other commands, other
//     channel types (port forwarding) and global requests (remote
//     forwarding) are refused, each with a log line.
//  4. Limits: HandshakeTimeout from accept to an accepted sync request,
//     IdleTimeout without a byte of the sync stream either way,
//     MaxSessionTime for the whole connection.
//  5. Result: Serve's error gives exit status 1 and one line on the
//     session's stderr; nil gives exit status 0.
//
// Every accept and refusal is logged with remote=, fingerprint=, login=
// (the SSH user name, recorded but not checked), user= (the mail user)
// and reason=.
package sshd
