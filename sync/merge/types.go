// Package merge is twinbox's sync engine: pure functions from what two
// replicas report (their mailboxes, subscriptions and the message records
// and tombstones that changed since their last sync, or all of them) to one
// plan that makes both replicas equal.
//
// There is no I/O, no clock and no goroutine here. The same inputs give the
// same plan whichever side started the sync: callers order the two sides by
// replica ID, and every tie is broken by data (GUIDs, names, timestamps),
// never by which side is "local".
//
// The rules (docs/design.md has the reasoning, the contract the promises):
//
//  1. Mailboxes are matched by GUID. Names merge last-writer-wins on
//     (NameT, Name). Among live mailboxes that end with one name, a keeper
//     is chosen (the lowest GUID both sides know, else the one that has
//     handed out the most UIDs, then the lowest GUID); each other one is
//     merged into it when it exists on one side only and that side does
//     not hold the keeper's directory (contract §3.4), else renamed aside
//     with a "-<guid8>" suffix. A side that merged a mailbox away keeps its
//     GUID as an alias (MergedInto): the other side's copy of that GUID is
//     merged into the same mailbox.
//  2. A deleted mailbox stays deleted only if no message survives in it:
//     messages the deleting side never saw bring it back (contract §5).
//  3. Expunge tombstones kill the instance they name: every instance of the
//     GUID born at or before it (Born stamps, model.KilledByBorn), or
//     reached from its UID through sync renumberings. An expunge beats a
//     flag change. Where both sides hold an instance at the same UID, the
//     side whose Born stamp says less learns the other's.
//  4. UIDs: a message keeps its UID when the other side has no different
//     message or tombstone at that UID; otherwise, and for messages of a
//     mailbox whose UIDVALIDITY is being replaced, it gets a fresh UID at or
//     above both sides' UIDNEXT, fresh UIDs handed out in GUID order.
//  5. Flags and keywords merge per name, last writer wins (model.FlagVal).
//  6. Subscriptions merge per name, last writer wins.
//
// In backup mode side 0 is the source and side 1 becomes its copy.
package merge

import "github.com/twinbox-mail/twinbox/model"

// Side is what one replica reports for a sync.
type Side struct {
	ReplicaID string
	Mailboxes []model.Mailbox
	Subs      []model.Subscription
	// UIDValidity is the last value the replica's UIDVALIDITY counter
	// handed out (0: unknown). A UIDVALIDITY the plan makes up is above
	// both sides', and each side's counter is raised past every value the
	// plan leaves on either side (SidePlan.UIDValidityFloor).
	UIDValidity uint32
	// Contents holds, per mailbox GUID, the records to merge: all of them, or
	// in an incremental sync only those changed since the last sync.
	Contents map[model.MailboxGUID]*Contents
}

// Contents is one mailbox's message records and tombstones on one side.
type Contents struct {
	Messages   []model.Message
	Tombstones []model.Tombstone
}

// Options steer a merge.
type Options struct {
	Backup bool // side 0 is the source, side 1 the copy
	// Base holds, for mailboxes synced incrementally, the UIDNEXT both sides
	// agreed on at their last sync: records below it that one side did not
	// report are known to be the same on both. Mailboxes absent from Base are
	// compared in full.
	Base map[model.MailboxGUID]uint32
}

// Plan is what both sides must do, index 0 and 1 as the sides were given.
type Plan struct {
	Sides [2]SidePlan
	// Held counts messages held back by a mass-expunge guard, per side.
	Held [2]int
	// Renumbered counts messages that got a fresh UID (UID conflicts).
	Renumbered int
	// Merged lists mailbox merges (contract §3.4), as "loser -> winner".
	Merged []string
	// Revalidated lists mailboxes given a new UIDVALIDITY because one side
	// knew another mailbox by their name and UIDVALIDITY, as
	// "name guid old -> new".
	Revalidated []string
}

// SidePlan is one side's part of a plan, in the order it must be applied:
// mailbox renames, creates and adoptions, then per-mailbox message work
// (adds, moves, flags, expunges), then mailbox deletes and subscriptions.
type SidePlan struct {
	Renames []MailboxOp
	Creates []MailboxOp
	Adopts  []Adopt
	Boxes   []BoxPlan
	Deletes []MailboxOp
	Subs    []model.Subscription
	// UIDValidityFloor, when not 0, is the value this side's UIDVALIDITY
	// counter must reach before the apply makes any mailbox: the highest
	// UIDVALIDITY either side's counter handed out or the plan leaves on
	// a mailbox, when this side's counter is below it. Dovecot then never
	// gives a mailbox made later on this side a UIDVALIDITY that another
	// mailbox had (here or on the peer), perhaps under the same name.
	UIDValidityFloor uint32 `json:",omitempty"`
}

// MailboxOp names a mailbox and what it must look like.
type MailboxOp struct {
	GUID        model.MailboxGUID
	Name        string
	NameT       int64
	UIDValidity uint32
	DeletedT    int64 // for deletes
}

// Adopt turns this side's mailbox From into the mailbox To (GUID and
// UIDVALIDITY of the winner of a merge); its messages are renumbered by the
// BoxPlan that follows.
type Adopt struct {
	From        model.MailboxGUID
	To          model.MailboxGUID
	Name        string
	NameT       int64
	UIDValidity uint32
}

// BoxPlan is the message work in one mailbox on one side.
type BoxPlan struct {
	GUID     model.MailboxGUID
	UIDNext  uint32 // the mailbox's UIDNEXT after the sync (never lower)
	Reset    bool   // backup: rewrite the mailbox's UID list from scratch
	BumpNext bool   // UIDNext is above this side's current UIDNEXT
	Exact    bool   // backup: Flags replace the registers instead of merging
	Adds     []Add
	// AddCount, when Adds is empty, says that this many adds are to be
	// pulled from the plan's sender mailbox by mailbox (a remote apply:
	// replica.AddSource), so that a large first sync is never held whole.
	AddCount int `json:"add_count,omitempty"`
	Moves    []Move
	Flags    []FlagSet
	Expunges []Expunge
	Release  []Expunge // held records to drop (the message is gone on both)
	// Borns gives records of this side the Born stamp the other side holds
	// for the same instance (same UID and GUID): learned where this side's
	// stamp is unknown (0: an index rebuilt from the disk) or later. Index
	// only: no file changes.
	Borns []BornSet `json:",omitempty"`
}

// BornSet sets the Born of the record at UID, if it still holds GUID.
type BornSet struct {
	UID  uint32
	GUID string
	Born int64
}

// Add is a message this side must get. Source names where the body is: the
// other side's mailbox and UID (the receiving side may find the GUID among
// its own files first and link it instead).
type Add struct {
	Msg        model.Message // final UID and flags
	SourceBox  model.MailboxGUID
	SourceUID  uint32
	SourceHeld bool
}

// Move gives a message of this side a new UID (the old one is retired).
type Move struct {
	GUID     string
	From, To uint32
}

// FlagSet merges Flags into the message at UID (exact in backup mode).
type FlagSet struct {
	UID   uint32
	GUID  string
	Flags model.Flags
}

// Expunge removes the message at UID. Born, when not 0, is the Born of
// the expunge that killed it (the tombstone the side records takes it
// instead of the local record's, when lower).
type Expunge struct {
	UID  uint32
	GUID string
	Born int64 `json:",omitempty"`
}

// Empty reports whether the side has nothing to do.
func (p *SidePlan) Empty() bool {
	if len(p.Renames)+len(p.Creates)+len(p.Adopts)+len(p.Deletes)+len(p.Subs) > 0 || p.UIDValidityFloor != 0 {
		return false
	}
	for _, b := range p.Boxes {
		if !b.Empty() {
			return false
		}
	}
	return true
}

// FirstUID is the NEXTUID that a mailbox the plan creates may show before
// its messages are added: the lowest UID the plan adds to it, or its
// UIDNEXT when it adds nothing. (A Dovecot that reads a NEXTUID takes any
// message listed below it later for an expunged one that reappeared.)
// It is 1 while the adds are still to be pulled (AddCount) and their UIDs
// unknown.
func (b *BoxPlan) FirstUID() uint32 {
	if len(b.Adds) == 0 && b.AddCount > 0 {
		return 1
	}
	first := b.UIDNext
	for _, a := range b.Adds {
		first = min(first, a.Msg.UID)
	}
	return max(first, 1)
}

// Empty reports whether the mailbox has no message work (UIDNEXT aside).
func (b *BoxPlan) Empty() bool {
	return !b.Reset && !b.BumpNext && b.AddCount == 0 && len(b.Adds)+len(b.Moves)+len(b.Flags)+len(b.Expunges)+len(b.Release)+len(b.Borns) == 0
}

// Empty reports whether neither side has anything to do.
func (p *Plan) Empty() bool { return p.Sides[0].Empty() && p.Sides[1].Empty() }
