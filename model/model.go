// Package model holds the data types that every layer of twinbox shares: the
// replica's mailboxes, messages, expunge tombstones and subscriptions as the
// index stores them, the sync engine merges them and the wire protocol carries
// them. It has no dependencies and no behaviour beyond small helpers.
//
// Times in this package ("T" fields) are hybrid logical timestamps in Unix
// nanoseconds: a replica stamps a local change with max(now, previous stamp of
// the same thing + 1), so a change made after seeing a value always orders
// after that value, whatever the clocks of the hosts say. Merges order values
// by (T, value) so that both sides of a sync pick the same winner.
package model

import (
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// MailboxGUID is the 128-bit mailbox GUID of the dovecot-uidlist header.
type MailboxGUID [16]byte

func (g MailboxGUID) String() string { return hex.EncodeToString(g[:]) }

// IsZero reports whether g is the zero GUID (unknown).
func (g MailboxGUID) IsZero() bool { return g == MailboxGUID{} }

// Less orders GUIDs bytewise.
func (g MailboxGUID) Less(o MailboxGUID) bool { return string(g[:]) < string(o[:]) }

func (g MailboxGUID) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

func (g *MailboxGUID) UnmarshalText(b []byte) error {
	p, err := ParseMailboxGUID(string(b))
	if err != nil {
		return err
	}
	*g = p
	return nil
}

// ParseMailboxGUID parses 32 hex digits.
func ParseMailboxGUID(s string) (MailboxGUID, error) {
	var g MailboxGUID
	if len(s) != 32 {
		return g, fmt.Errorf("mailbox GUID %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(g[:], []byte(s)); err != nil {
		return g, fmt.Errorf("mailbox GUID %q: %w", s, err)
	}
	return g, nil
}

// System flag names. Maildir's P ("passed") has no IMAP flag; it travels
// under the name FlagPassed so that it is kept, not invented.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
	FlagPassed   = `$MaildirPassed`
)

// FlagVal is one flag's (or keyword's) last-writer-wins register.
type FlagVal struct {
	Set bool  `json:"s,omitempty"`
	T   int64 `json:"t,omitempty"`
}

// Newer reports whether v wins over o: later T wins; on equal T, set wins.
func (v FlagVal) Newer(o FlagVal) bool {
	if v.T != o.T {
		return v.T > o.T
	}
	return v.Set && !o.Set
}

// Flags maps a flag or keyword name to its register. A name that is absent
// is clear with T=0. Keyword names are case-sensitive as IMAP stores them.
type Flags map[string]FlagVal

// Merge returns the per-flag winner of a and b. The result may be a or b
// itself: treat flag maps as values, never change one in place.
func Merge(a, b Flags) Flags {
	switch {
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	case Equal(a, b):
		return a
	}
	out := make(Flags, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if cur, ok := out[k]; !ok || v.Newer(cur) {
			out[k] = v
		}
	}
	return out
}

// SetNames returns the names that are set, sorted.
func (f Flags) SetNames() []string {
	var out []string
	for k, v := range f {
		if v.Set {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Has reports whether name is set.
func (f Flags) Has(name string) bool { return f[name].Set }

// Equal reports whether a and b hold the same registers (absent == clear at 0).
func Equal(a, b Flags) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// SameSet reports whether a and b have the same set flags, ignoring times.
func SameSet(a, b Flags) bool {
	return strings.Join(a.SetNames(), " ") == strings.Join(b.SetNames(), " ")
}

// Message is one message of one mailbox on one replica.
type Message struct {
	UID  uint32 `json:"u"`
	GUID string `json:"g"` // identity: uidlist G field, else the Maildir base name
	// Base is the file's base name on the replica that sent the record; a
	// receiver uses it (it equals GUID unless Dovecot recorded a G field).
	Base   string `json:"b,omitempty"`
	Flags  Flags  `json:"f,omitempty"`
	Size   int64  `json:"s"`           // bytes of the file
	VSize  int64  `json:"w,omitempty"` // ,W= virtual size, 0 when unknown
	Mtime  int64  `json:"t"`           // INTERNALDATE: the file's mtime, Unix ns
	Modseq uint64 `json:"m,omitempty"` // local: last change on this replica
	// Born is when this instance of the message first appeared in this
	// mailbox, stamped by the replica that saw it first and kept across
	// syncs and renumberings. An expunge of the GUID stamped with a Born at
	// or after it kills it, whatever UID it has by now; a copy a client
	// puts back later is a new instance with a later Born. Negative: not
	// known exactly (model/born.go); 0: unknown.
	Born int64 `json:"bn,omitempty"`
	New  bool  `json:"n,omitempty"` // lives in new/ (placement hint only)
	// Held marks a message whose file is gone in a scan that looked like a
	// mass expunge: it is neither expunged on peers nor restored here until
	// an admin releases it.
	Held bool `json:"h,omitempty"`
}

// Tombstone records that a UID of a mailbox is no longer used for GUID:
// expunged (MovedTo == 0) or renumbered by a sync to MovedTo.
//
// Lost marks a UID whose message vanished with its mailbox's directory (no
// delete intent): nothing was expunged, and the UID may name GUID again
// (when the mailbox is refilled from a peer) but never another message.
type Tombstone struct {
	UID     uint32 `json:"u"`
	GUID    string `json:"g"`
	Born    int64  `json:"bn,omitempty"` // Born of the instance it retired
	MovedTo uint32 `json:"to,omitempty"`
	Lost    bool   `json:"l,omitempty"`
	Modseq  uint64 `json:"m,omitempty"`
	T       int64  `json:"t,omitempty"`
}

// Mailbox is one mailbox's identity and name on one replica. Deleted
// mailboxes are kept as records so that the delete replicates.
type Mailbox struct {
	GUID        MailboxGUID `json:"guid"`
	Name        string      `json:"name"` // UTF-8, "/" separated, "INBOX" for the root
	NameT       int64       `json:"name_t"`
	UIDValidity uint32      `json:"uidvalidity"`
	UIDNext     uint32      `json:"uidnext"`
	Modseq      uint64      `json:"modseq"` // highest modseq of the mailbox's records
	// Epoch changes whenever this replica's record of the mailbox's contents
	// was reset (directory vanished, control files lost): saved sync state
	// that names another epoch is stale.
	Epoch    uint64 `json:"epoch"`
	Deleted  bool   `json:"deleted,omitempty"`
	DeletedT int64  `json:"deleted_t,omitempty"`
	Special  string `json:"special,omitempty"` // \Trash, \Junk (local hint)
	Messages int    `json:"messages"`          // live messages, for reports
	// Missing marks a live mailbox whose directory vanished without a
	// recorded delete: its contents were reset and it will be refilled.
	Missing bool `json:"missing,omitempty"`
	// MergedInto, on a Deleted record, says that this replica adopted the
	// mailbox into another one (contract §3.4): the GUID is an alias of
	// that mailbox, and a peer still holding it merges it there too. The
	// record keeps the mailbox's expunge tombstones.
	MergedInto MailboxGUID `json:"merged_into,omitzero"`
}

// Subscription is one name's subscribed/unsubscribed register.
type Subscription struct {
	Name       string `json:"name"`
	Subscribed bool   `json:"sub"`
	T          int64  `json:"t"`
}

// Newer orders subscription registers like FlagVal.
func (s Subscription) Newer(o Subscription) bool {
	if s.T != o.T {
		return s.T > o.T
	}
	return s.Subscribed && !o.Subscribed
}

// IsInbox reports whether a mailbox name names INBOX (case-insensitive).
func IsInbox(name string) bool { return strings.EqualFold(name, "INBOX") }

// NormName folds the INBOX name; other names are case-sensitive.
func NormName(name string) string {
	if IsInbox(name) {
		return "INBOX"
	}
	return name
}
