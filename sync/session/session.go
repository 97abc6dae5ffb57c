// Package session runs one sync between two replicas: it gathers what both
// report, asks the engine (package merge) for the plan, has each side apply
// its part, and records the sync state on both only when both succeeded.
//
// The steps and their round trips (a remote replica costs one each):
//
//  1. Begin on both: each scans and reports mailboxes, subscriptions and
//     the state it saved for the other.
//  2. Changes on both: per mailbox, the records changed since the saved
//     state, or all of them where the state is missing or stale.
//  3. The engine computes one plan from both reports, with the sides in
//     replica-ID order, so it does not matter which side started.
//  4. Apply on each side: bodies the side lacks are fetched from the other
//     side in one streamed batch (messages already held locally are linked).
//  5. Commit on both, only if both applied everything: the new saved state.
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// ErrSameReplica is returned when both sides have one replica ID.
var ErrSameReplica = errors.New("both sides have the same replica ID (a root copied with its twinbox.db? remove the copy's twinbox.db): replica IDs must differ")

// Options steer a sync.
type Options struct {
	Backup           bool     // side A is the source, B becomes its copy
	DryRun           bool     // compute and report the plan, change nothing
	Full             bool     // ignore saved state
	AllowMassExpunge bool     // release held expunges
	Include          []string // mailbox name patterns (* and %); empty = all
	Exclude          []string
	// Progress, if set, hears the size of the transfer once the plan is
	// known and of every body as it streams.
	Progress Progress
}

// Progress receives transfer progress.
type Progress interface {
	Planned(messages int, bytes int64)
	Add(messages int, bytes int64)
}

// Summary reports a sync.
type Summary struct {
	Mode       string               `json:"mode"`
	A          replica.Info         `json:"a"`
	B          replica.Info         `json:"b"`
	Mailboxes  int                  `json:"mailboxes"`
	Full       int                  `json:"mailboxes_compared_in_full"`
	ResultA    *replica.ApplyResult `json:"applied_a,omitempty"`
	ResultB    *replica.ApplyResult `json:"applied_b,omitempty"`
	Renumbered int                  `json:"renumbered"`
	Merged     []string             `json:"merged,omitempty"`
	// Revalidated lists mailboxes given a new UIDVALIDITY (merge.Plan).
	Revalidated []string           `json:"revalidated,omitempty"`
	Held        []replica.HeldInfo `json:"held,omitempty"`
	Changed     bool               `json:"changed_during_sync"`
	Plan        *merge.Plan        `json:"-"`
	PlanText    []string           `json:"plan,omitempty"`
	Duration    time.Duration      `json:"duration_ns"`
	sides       [2]*replica.BeginReply
}

// Run syncs replicas a and b (both already opened and locked).
func Run(ctx context.Context, a, b replica.Replica, opt Options) (*Summary, error) {
	start := time.Now()
	sum := &Summary{Mode: "sync"}
	if opt.Backup {
		sum.Mode = "backup"
	}
	ia, ib := a.Info(), b.Info()
	if ia.ReplicaID == ib.ReplicaID {
		return nil, fmt.Errorf("%s and %s: %w", where(ia), where(ib), ErrSameReplica)
	}
	ra, err := a.Begin(ctx, replica.BeginRequest{Peer: ib, AllowMassExpunge: opt.AllowMassExpunge})
	if err != nil {
		return nil, err
	}
	rb, err := b.Begin(ctx, replica.BeginRequest{Peer: ia, AllowMassExpunge: opt.AllowMassExpunge})
	if err != nil {
		return nil, err
	}
	sum.A, sum.B = ra.Info, rb.Info
	sum.Held = append(append(sum.Held, prefixHeld(ra.Info, ra.Held)...), prefixHeld(rb.Info, rb.Held)...)

	// Which mailboxes, and since when.
	filter := newFilter(opt.Include, opt.Exclude)
	boxesA, boxesB := filterBoxes(ra.Mailboxes, filter), filterBoxes(rb.Mailboxes, filter)
	keep := map[model.MailboxGUID]bool{}
	for _, m := range boxesA {
		keep[m.GUID] = true
	}
	for _, m := range boxesB {
		keep[m.GUID] = true
	}
	// A mailbox excluded by name on one side is excluded on both.
	for _, m := range append(append([]model.Mailbox(nil), ra.Mailboxes...), rb.Mailboxes...) {
		if !filter(m.Name) {
			delete(keep, m.GUID)
		}
	}
	boxesA, boxesB = onlyKept(boxesA, keep), onlyKept(boxesB, keep)
	base, sinceA, sinceB := savedState(ra, rb, boxesA, boxesB, opt.Full)
	if opt.Backup {
		// A backup compares in full every mailbox that changed on either
		// side since the last backup, and skips the rest.
		base, sinceA, sinceB = backupState(boxesA, boxesB, base, sinceA, sinceB)
	}
	sum.Mailboxes = len(keep)
	reqA, reqB := changesRequest(boxesA, boxesB, sinceA), changesRequest(boxesB, boxesA, sinceB)
	// Compared in full: mailboxes without saved state that either side is
	// asked for (not a mailbox deleted or merged away on one side that the
	// other never knew).
	full := map[model.MailboxGUID]bool{}
	for _, r := range [...]replica.ChangesRequest{reqA, reqB} {
		for _, bs := range r.Boxes {
			if _, ok := base[bs.GUID]; !ok {
				full[bs.GUID] = true
			}
		}
	}
	sum.Full = len(full)
	ca, err := a.Changes(ctx, reqA)
	if err != nil {
		return nil, err
	}
	// Per-GUID expunges: where the saved state is used, each side also
	// reports its expunges of the message GUIDs the other side reported,
	// however old (a copy of an expunged message can come back through a
	// third replica, under another UID).
	reqB.Lookup = lookups(ca, base)
	cb, err := b.Changes(ctx, reqB)
	if err != nil {
		return nil, err
	}
	if lk := lookups(cb, base); len(lk) > 0 {
		more, err := a.Changes(ctx, replica.ChangesRequest{Lookup: lk})
		if err != nil {
			return nil, err
		}
		ca = addTombstones(ca, more)
	}

	// The engine, sides in replica-ID order (backup: the source first).
	sa := &merge.Side{ReplicaID: ra.Info.ReplicaID, Mailboxes: boxesA, Subs: ra.Subs, Contents: ca, UIDValidity: ra.UIDValidity}
	sb := &merge.Side{ReplicaID: rb.Info.ReplicaID, Mailboxes: boxesB, Subs: rb.Subs, Contents: cb, UIDValidity: rb.UIDValidity}
	swap := !opt.Backup && sb.ReplicaID < sa.ReplicaID
	s0, s1 := sa, sb
	if swap {
		s0, s1 = sb, sa
	}
	plan, err := merge.Merge(s0, s1, merge.Options{Backup: opt.Backup, Base: base})
	if err != nil {
		return nil, err
	}
	// The plan holds what it needs: let the reports go before the bodies
	// flow (a first sync of 50k messages holds them twice otherwise).
	ca, cb, sa, sb, s0, s1 = nil, nil, nil, nil, nil, nil
	pa, pb := &plan.Sides[0], &plan.Sides[1]
	if swap {
		pa, pb = pb, pa
	}
	sum.Plan = plan
	sum.Renumbered = plan.Renumbered
	sum.Merged = plan.Merged
	sum.Revalidated = plan.Revalidated
	if opt.DryRun {
		names := map[model.MailboxGUID]string{}
		for _, m := range append(append([]model.Mailbox(nil), boxesA...), boxesB...) {
			names[m.GUID] = m.Name
		}
		sum.PlanText = append(Describe("A", ra.Info, pa, names), Describe("B", rb.Info, pb, names)...)
		sum.Duration = time.Since(start)
		return sum, nil
	}

	// Apply: B first (for a remote B that is one streamed exchange), then A.
	var srcA, srcB replica.BodySource = a, b
	if opt.Progress != nil {
		var n int
		var bytes int64
		for _, sp := range []*merge.SidePlan{pa, pb} {
			for _, bp := range sp.Boxes {
				for _, ad := range bp.Adds {
					n++
					bytes += ad.Msg.Size
				}
			}
		}
		opt.Progress.Planned(n, bytes)
		srcA, srcB = &counting{a, opt.Progress}, &counting{b, opt.Progress}
	}
	if sum.ResultB, err = b.Apply(ctx, pb, srcA); err != nil {
		return sum, err
	}
	if sum.ResultA, err = a.Apply(ctx, pa, srcB); err != nil {
		return sum, err
	}
	sum.Changed = sum.ResultA.Changed || sum.ResultB.Changed
	// Nothing to do and every mailbox synced from valid saved state: that
	// state is still right, and a no-change sync writes nothing at all.
	unchanged := plan.Empty() && sum.Full == 0 && len(keep) > 0
	if !sum.Changed && !unchanged {
		id := newSyncID()
		bases := finalBases(boxesA, boxesB, plan, sum.ResultA.Epochs, sum.ResultB.Epochs)
		if err := a.Commit(ctx, replica.CommitRequest{Peer: rb.Info, SyncID: id, Bases: bases, PeerEpochs: sum.ResultB.Epochs}); err != nil {
			return sum, err
		}
		if err := b.Commit(ctx, replica.CommitRequest{Peer: ra.Info, SyncID: id, Bases: bases, PeerEpochs: sum.ResultA.Epochs}); err != nil {
			return sum, err
		}
	}
	sum.Duration = time.Since(start)
	return sum, nil
}

// counting reports bodies as they stream through a BodySource.
type counting struct {
	src  replica.BodySource
	prog Progress
}

func (c *counting) Fetch(ctx context.Context, refs []replica.BodyRef, fn func(i int, r io.Reader) error) error {
	return c.src.Fetch(ctx, refs, func(i int, r io.Reader) error {
		cr := &countReader{r: r}
		err := fn(i, cr)
		c.prog.Add(1, cr.n)
		return err
	})
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func where(i replica.Info) string {
	if i.User != "" {
		return fmt.Sprintf("user %s (%s)", i.User, i.Root)
	}
	return i.Root
}

func prefixHeld(i replica.Info, h []replica.HeldInfo) []replica.HeldInfo {
	out := make([]replica.HeldInfo, 0, len(h))
	for _, x := range h {
		x.Mailbox = where(i) + ": " + x.Mailbox
		out = append(out, x)
	}
	return out
}

func newSyncID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// savedState decides, per mailbox, whether the state both sides saved of
// their last sync is usable, and returns the common bases and the modseqs
// each side must report changes since.
func savedState(ra, rb *replica.BeginReply, boxesA, boxesB []model.Mailbox, full bool) (map[model.MailboxGUID]uint32, map[model.MailboxGUID]uint64, map[model.MailboxGUID]uint64) {
	base := map[model.MailboxGUID]uint32{}
	sinceA := map[model.MailboxGUID]uint64{}
	sinceB := map[model.MailboxGUID]uint64{}
	pa, pb := ra.Pair, rb.Pair
	if full || pa == nil || pb == nil || pa.SyncID != pb.SyncID || pa.PeerIndexID != rb.Info.IndexID || pb.PeerIndexID != ra.Info.IndexID {
		return base, sinceA, sinceB
	}
	// (Sized maps: a no-change sync fills them with every mailbox.)
	base = make(map[model.MailboxGUID]uint32, len(boxesA))
	sinceA = make(map[model.MailboxGUID]uint64, len(boxesA))
	sinceB = make(map[model.MailboxGUID]uint64, len(boxesA))
	byB := make(map[model.MailboxGUID]*model.Mailbox, len(boxesB))
	for i := range boxesB {
		byB[boxesB[i].GUID] = &boxesB[i]
	}
	for _, ma := range boxesA {
		mb, ok := byB[ma.GUID]
		if !ok || ma.UIDValidity != mb.UIDValidity {
			continue
		}
		sa, okA := pa.Boxes[ma.GUID]
		sb, okB := pb.Boxes[ma.GUID]
		if !okA || !okB || sa.Base != sb.Base || sa.Epoch != ma.Epoch || sb.Epoch != mb.Epoch || sa.PeerEpoch != mb.Epoch || sb.PeerEpoch != ma.Epoch {
			continue
		}
		if sa.Sent > ma.Modseq || sb.Sent > mb.Modseq {
			continue // the counters went back: the index was replaced
		}
		base[ma.GUID] = sa.Base
		sinceA[ma.GUID] = sa.Sent
		sinceB[ma.GUID] = sb.Sent
	}
	return base, sinceA, sinceB
}

// backupState keeps the saved state only for mailboxes unchanged on both
// sides (nothing to copy there); every other mailbox is compared in full,
// since the copy must match the source exactly.
func backupState(a, b []model.Mailbox, base map[model.MailboxGUID]uint32, sa, sb map[model.MailboxGUID]uint64) (map[model.MailboxGUID]uint32, map[model.MailboxGUID]uint64, map[model.MailboxGUID]uint64) {
	mod := map[model.MailboxGUID]uint64{}
	for _, m := range b {
		mod[m.GUID] = m.Modseq
	}
	nb := map[model.MailboxGUID]uint32{}
	na, nbs := map[model.MailboxGUID]uint64{}, map[model.MailboxGUID]uint64{}
	for _, m := range a {
		if _, ok := base[m.GUID]; ok && sa[m.GUID] == m.Modseq && sb[m.GUID] == mod[m.GUID] {
			nb[m.GUID], na[m.GUID], nbs[m.GUID] = base[m.GUID], sa[m.GUID], sb[m.GUID]
		}
	}
	return nb, na, nbs
}

func changesRequest(own, other []model.Mailbox, since map[model.MailboxGUID]uint64) replica.ChangesRequest {
	var req replica.ChangesRequest
	otherLive := map[model.MailboxGUID]bool{}
	for _, m := range other {
		otherLive[m.GUID] = !m.Deleted
	}
	for _, m := range own {
		if m.Deleted && !otherLive[m.GUID] {
			// A delete (or a merge alias) the other side never knew of, or
			// that it made too: nothing to say.
			continue
		}
		s, ok := since[m.GUID]
		if ok && s == m.Modseq {
			continue // nothing changed since the last sync
		}
		req.Boxes = append(req.Boxes, replica.BoxSince{GUID: m.GUID, Since: s})
	}
	return req
}

// lookups lists, per mailbox synced from saved state, the message GUIDs a
// side reported.
func lookups(c map[model.MailboxGUID]*merge.Contents, base map[model.MailboxGUID]uint32) []replica.BoxLookup {
	var out []replica.BoxLookup
	for g, ct := range c {
		if _, ok := base[g]; !ok || ct == nil || len(ct.Messages) == 0 {
			continue
		}
		lk := replica.BoxLookup{GUID: g}
		for _, m := range ct.Messages {
			lk.Messages = append(lk.Messages, m.GUID)
		}
		out = append(out, lk)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GUID.Less(out[j].GUID) })
	return out
}

// addTombstones adds the records and tombstones of more to c, skipping
// UIDs c has.
func addTombstones(c, more map[model.MailboxGUID]*merge.Contents) map[model.MailboxGUID]*merge.Contents {
	if c == nil {
		c = map[model.MailboxGUID]*merge.Contents{}
	}
	for g, m := range more {
		if m == nil || len(m.Tombstones)+len(m.Messages) == 0 {
			continue
		}
		ct := c[g]
		if ct == nil {
			ct = &merge.Contents{}
			c[g] = ct
		}
		have := map[uint32]bool{}
		for _, x := range ct.Messages {
			have[x.UID] = true
		}
		for _, t := range ct.Tombstones {
			have[t.UID] = true
		}
		for _, t := range m.Tombstones {
			if !have[t.UID] {
				have[t.UID] = true
				ct.Tombstones = append(ct.Tombstones, t)
			}
		}
		for _, x := range m.Messages {
			if !have[x.UID] {
				have[x.UID] = true
				ct.Messages = append(ct.Messages, x)
			}
		}
	}
	return c
}

// finalBases is the UIDNEXT both sides agree on per mailbox after the sync.
func finalBases(a, b []model.Mailbox, plan *merge.Plan, ea, eb map[model.MailboxGUID]uint64) map[model.MailboxGUID]uint32 {
	out := map[model.MailboxGUID]uint32{}
	for _, list := range [][]model.Mailbox{a, b} {
		for _, m := range list {
			if !m.Deleted {
				out[m.GUID] = max(out[m.GUID], m.UIDNext)
			}
		}
	}
	for _, sp := range plan.Sides {
		for _, bp := range sp.Boxes {
			out[bp.GUID] = max(out[bp.GUID], bp.UIDNext)
		}
	}
	for g := range out {
		if _, ok := ea[g]; !ok {
			delete(out, g)
		} else if _, ok := eb[g]; !ok {
			delete(out, g)
		}
	}
	return out
}

func filterBoxes(in []model.Mailbox, keep func(string) bool) []model.Mailbox {
	var out []model.Mailbox
	for i, m := range in {
		if keep(m.Name) {
			if out == nil { // (room for the rest: no regrowth of a large struct)
				out = make([]model.Mailbox, 0, len(in)-i)
			}
			out = append(out, m)
		}
	}
	return out
}

func onlyKept(in []model.Mailbox, keep map[model.MailboxGUID]bool) []model.Mailbox {
	var out []model.Mailbox
	for i, m := range in {
		if keep[m.GUID] {
			if out == nil {
				out = make([]model.Mailbox, 0, len(in)-i)
			}
			out = append(out, m)
		}
	}
	return out
}

// newFilter builds the include/exclude test. Patterns use IMAP LIST
// wildcards: * matches anything, % anything but the hierarchy separator.
func newFilter(include, exclude []string) func(string) bool {
	return func(name string) bool {
		for _, p := range exclude {
			if Match(p, name) {
				return false
			}
		}
		if len(include) == 0 {
			return true
		}
		for _, p := range include {
			if Match(p, name) {
				return true
			}
		}
		return false
	}
}

// Match reports whether name matches an IMAP LIST-style pattern.
func Match(pattern, name string) bool {
	if model.IsInbox(name) && strings.EqualFold(pattern, "INBOX") {
		return true
	}
	if pattern == "" {
		return name == ""
	}
	switch pattern[0] {
	case '*':
		for i := 0; i <= len(name); i++ {
			if Match(pattern[1:], name[i:]) {
				return true
			}
		}
		return false
	case '%':
		for i := 0; i <= len(name); i++ {
			if Match(pattern[1:], name[i:]) {
				return true
			}
			if i < len(name) && name[i] == '/' {
				return false
			}
		}
		return false
	}
	if name == "" || name[0] != pattern[0] {
		return false
	}
	return Match(pattern[1:], name[1:])
}

// Describe renders one side's plan for --dry-run and -v.
func Describe(label string, info replica.Info, p *merge.SidePlan, names map[model.MailboxGUID]string) []string {
	var out []string
	name := func(g model.MailboxGUID) string {
		if n, ok := names[g]; ok {
			return fmt.Sprintf("%q", n)
		}
		return g.String()
	}
	add := func(f string, args ...any) {
		out = append(out, fmt.Sprintf("%s (%s): ", label, where(info))+fmt.Sprintf(f, args...))
	}
	for _, op := range p.Renames {
		add("rename mailbox %s to %q", name(op.GUID), op.Name)
	}
	for _, op := range p.Creates {
		add("create mailbox %q (UIDVALIDITY %d)", op.Name, op.UIDValidity)
	}
	for _, a := range p.Adopts {
		if a.From == a.To {
			add("give mailbox %s (%s) UIDVALIDITY %d as %q", name(a.From), a.From, a.UIDValidity, a.Name)
			continue
		}
		add("merge mailbox %s (%s) into %s as %q (UIDVALIDITY %d)", name(a.From), a.From, a.To, a.Name, a.UIDValidity)
	}
	if p.UIDValidityFloor != 0 {
		add("raise the UIDVALIDITY counter to %d", p.UIDValidityFloor)
	}
	for _, bp := range p.Boxes {
		var parts []string
		if len(bp.Adds) > 0 {
			parts = append(parts, fmt.Sprintf("add %d", len(bp.Adds)))
		}
		if len(bp.Moves) > 0 {
			parts = append(parts, fmt.Sprintf("renumber %d", len(bp.Moves)))
		}
		if len(bp.Flags) > 0 {
			parts = append(parts, fmt.Sprintf("set flags on %d", len(bp.Flags)))
		}
		if len(bp.Expunges) > 0 {
			parts = append(parts, fmt.Sprintf("expunge %d", len(bp.Expunges)))
		}
		if len(bp.Release) > 0 {
			parts = append(parts, fmt.Sprintf("release %d held", len(bp.Release)))
		}
		if len(bp.Borns) > 0 {
			parts = append(parts, fmt.Sprintf("learn %d Born stamps", len(bp.Borns)))
		}
		if bp.Reset {
			parts = append(parts, "rewrite UID list")
		}
		if bp.BumpNext {
			parts = append(parts, fmt.Sprintf("UIDNEXT %d", bp.UIDNext))
		}
		if len(parts) > 0 {
			add("mailbox %s: %s", name(bp.GUID), strings.Join(parts, ", "))
		}
	}
	for _, op := range p.Deletes {
		add("delete mailbox %q", op.Name)
	}
	for _, s := range p.Subs {
		verb := "unsubscribe"
		if s.Subscribed {
			verb = "subscribe"
		}
		add("%s %q", verb, s.Name)
	}
	sort.Strings(out)
	return out
}
