// Package tcp is twinbox's tcp: and tcps: transports: a client (Dial) and a
// listener (Listener) that carry the sync protocol over TCP, authenticated
// by a shared secret that never crosses the wire.
//
// Before the sync protocol starts, both ends run a mutual
// challenge-response over the secret (HMAC-SHA256, a fresh 32-byte nonce
// from each side, an ephemeral X25519 exchange), bound to a transcript of
// the protocol version, the mode (tcp or tcps), the secret's name, the mail
// user, both nonces, both X25519 shares and, for tcps, the TLS session's
// exported keying material. The client proves first; the server proves
// back only to a client that proved. A secret authorises only the users
// its patterns match.
//
//   - tcp: after the handshake, both directions are wrapped in an AEAD
//     record layer (AES-256-GCM, per-direction keys from HKDF-SHA256 over
//     the secret, the X25519 shared secret and the transcript; the nonce is
//     the record's sequence number; an authenticated close record marks the
//     end). Any forged, reordered, replayed or truncated record ends the
//     connection with an error.
//   - tcps: TLS 1.3 only, the server certificate verified, the server name
//     checked, client certificates optional; the same secret handshake runs
//     inside TLS, with no second record layer.
//
// docs/tcp.md describes the bytes, the secret file format and what the
// design does and does not protect against.
package tcp
