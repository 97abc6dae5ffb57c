// Package replica defines what the sync session needs of a replica: the
// calls of one sync, in order, and their messages. A local Maildir replica
// (package index) implements it directly; a replica across a connection
// implements it as a wire protocol client (package wire), whose server
// drives a local replica. The session cannot tell them apart.
package replica

import (
	"context"
	"io"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

// Info identifies a replica.
type Info struct {
	ReplicaID string `json:"replica_id"`
	IndexID   string `json:"index_id"`
	User      string `json:"user,omitempty"`
	Root      string `json:"root,omitempty"`
}

// Replica is one side of a sync. Calls come in this order: Begin, Changes,
// Apply, Commit; Fetch may be called by the other side's Apply at any time
// after Changes; Close always.
type Replica interface {
	// Info identifies the replica (IndexID may be empty before Begin).
	Info() Info
	// Begin scans the replica (its lock is already held) and reports its
	// mailboxes, subscriptions and the state it saved for peer.
	Begin(ctx context.Context, req BeginRequest) (*BeginReply, error)
	// Changes reports message records and tombstones per mailbox.
	Changes(ctx context.Context, req ChangesRequest) (map[model.MailboxGUID]*merge.Contents, error)
	// Apply carries out this replica's part of a plan, fetching bodies from
	// src. It may consume the plan's adds (a remote replica drops them once
	// sent, so that a large first sync is not held twice).
	Apply(ctx context.Context, plan *merge.SidePlan, src BodySource) (*ApplyResult, error)
	// Commit records the sync state for peer after both sides applied.
	Commit(ctx context.Context, req CommitRequest) error
	BodySource
	Close() error
}

// BeginRequest starts a sync.
type BeginRequest struct {
	Peer             Info `json:"peer"`
	AllowMassExpunge bool `json:"allow_mass_expunge,omitempty"`
}

// BeginReply describes the replica after its scan.
type BeginReply struct {
	Info      Info                 `json:"info"`
	Mailboxes []model.Mailbox      `json:"mailboxes"`
	Subs      []model.Subscription `json:"subs"`
	Pair      *PairState           `json:"pair,omitempty"`
	Held      []HeldInfo           `json:"held,omitempty"`
	// UIDValidity is the last value the replica's UIDVALIDITY counter
	// (Dovecot's dovecot-uidvalidity) handed out; 0 when it has none or
	// the replica does not say (an older twinbox).
	UIDValidity uint32 `json:"uidvalidity,omitempty"`
}

// HeldInfo is a mailbox with expunges held back by the mass-expunge guard.
type HeldInfo struct {
	Mailbox string `json:"mailbox"`
	Count   int    `json:"count"`
}

// PairState is what a replica saved about its last sync with one peer.
type PairState struct {
	PeerIndexID string                             `json:"peer_index_id"`
	SyncID      string                             `json:"sync_id"`
	Boxes       map[model.MailboxGUID]PairBoxState `json:"boxes"`
}

// PairBoxState is the saved state of one mailbox for one peer.
type PairBoxState struct {
	Base      uint32 `json:"base"`       // UIDNEXT both agreed on
	Sent      uint64 `json:"sent"`       // own modseq the peer has everything up to
	Epoch     uint64 `json:"epoch"`      // own epoch then
	PeerEpoch uint64 `json:"peer_epoch"` // the peer's epoch then
}

// ChangesRequest asks for records of some mailboxes: Since 0 means all.
type ChangesRequest struct {
	Boxes []BoxSince `json:"boxes"`
	// Lookup asks, per mailbox, for the records and expunge tombstones of
	// some message GUIDs whatever their modseq: the peer reported instances
	// of them that this side may hold unchanged under another UID, or may
	// have expunged before (a copy that came back through a third replica
	// under another UID). A replica that does not know the field answers
	// without them, which costs convergence, never mail.
	Lookup []BoxLookup `json:"lookup,omitempty"`
}

// BoxLookup names message GUIDs of one mailbox.
type BoxLookup struct {
	GUID     model.MailboxGUID `json:"guid"`
	Messages []string          `json:"messages"`
}

// BoxSince asks for one mailbox's records with modseq above Since.
type BoxSince struct {
	GUID  model.MailboxGUID `json:"guid"`
	Since uint64            `json:"since"`
}

// ApplyResult counts what an apply did.
type ApplyResult struct {
	Added      int   `json:"added"`
	Linked     int   `json:"linked"`
	Fetched    int   `json:"fetched"`
	Expunged   int   `json:"expunged"`
	Flagged    int   `json:"flagged"`
	Moved      int   `json:"moved"`
	Bytes      int64 `json:"bytes"`
	MailboxOps int   `json:"mailbox_ops"`
	// Changed reports that the replica changed under the sync: the steps
	// that met it were skipped and the next sync does them.
	Changed bool     `json:"changed,omitempty"`
	Skipped []string `json:"skipped,omitempty"`
	// Epochs are the replica's mailbox epochs after the apply.
	Epochs map[model.MailboxGUID]uint64 `json:"epochs"`
}

// CommitRequest records a finished sync.
type CommitRequest struct {
	Peer       Info                         `json:"peer"`
	SyncID     string                       `json:"sync_id"`
	Bases      map[model.MailboxGUID]uint32 `json:"bases"`
	PeerEpochs map[model.MailboxGUID]uint64 `json:"peer_epochs"`
}

// BodyRef names a message body.
type BodyRef struct {
	Box  model.MailboxGUID `json:"box"`
	UID  uint32            `json:"uid"`
	GUID string            `json:"guid"`
	Size int64             `json:"size"`
}

// BodySource hands out message bodies: fn is called once per ref that is
// found, with the ref's index and a reader of exactly its bytes. Refs that
// cannot be found are skipped (the receiver notices the gap).
type BodySource interface {
	Fetch(ctx context.Context, refs []BodyRef, fn func(i int, r io.Reader) error) error
}

// AddSource is implemented by a BodySource that can also hand out a plan's
// adds mailbox by mailbox (the plan then carries only BoxPlan.AddCount).
type AddSource interface {
	Adds(ctx context.Context, box int) ([]merge.Add, error)
}
