package merge

import (
	"fmt"
	"sort"

	"github.com/twinbox-mail/twinbox/model"
)

// box is one final mailbox while the plan is being made.
type box struct {
	guid   model.MailboxGUID
	rec    [2]*model.Mailbox // this GUID's record on each side
	losers [2]*model.Mailbox // a mailbox of that side that merges into this one
	name   string
	nameT  int64
	uidv   uint32
	// void marks a side whose UIDs for this mailbox do not count: its records
	// were made under another UIDVALIDITY (a merge, or a GUID seen with two
	// UIDVALIDITYs).
	void [2]bool
	// reval marks a side that holds the mailbox live under the UIDVALIDITY
	// the plan replaces with a fresh one (its UIDs stay: no client knows
	// any under the new value).
	reval [2]bool
	fresh bool // given a fresh UIDVALIDITY by this plan
}

func (b *box) has(s int) bool { return b.rec[s] != nil }

// alive reports whether side s holds the mailbox as a live one (in this
// GUID or as a mailbox that merges into it).
func (b *box) alive(s int) bool {
	return (b.rec[s] != nil && !b.rec[s].Deleted) || b.losers[s] != nil
}

func (b *box) deletedOn(s int) bool { return b.rec[s] != nil && b.rec[s].Deleted }

// Merge computes the plan that makes sides a and b equal.
func Merge(a, b *Side, opt Options) (*Plan, error) {
	sides := [2]*Side{a, b}
	for i, s := range sides {
		if err := validate(s); err != nil {
			return nil, fmt.Errorf("replica %q: %w", sides[i].ReplicaID, err)
		}
	}
	if opt.Backup {
		plan, err := mergeBackup(sides, opt)
		if err == nil {
			// The copy's counter passes the source's values; the source
			// is never written.
			raiseCounters(sides, plan, highestUIDValidity(sides))
			plan.Sides[0].UIDValidityFloor = 0
		}
		return plan, err
	}
	plan := &Plan{}
	boxes := resolveMailboxes(sides, plan)
	fresh := &freshValues{top: highestUIDValidity(sides), plan: plan}
	revalidate(sides, boxes, fresh)
	for _, bx := range boxes {
		mergeBox(sides, bx, opt, plan, fresh)
	}
	mergeSubs(sides, plan)
	raiseCounters(sides, plan, fresh.top)
	return plan, nil
}

func validate(s *Side) error {
	seen := map[model.MailboxGUID]bool{}
	for i := range s.Mailboxes {
		mb := &s.Mailboxes[i]
		if mb.GUID.IsZero() {
			return fmt.Errorf("mailbox %q has no GUID", mb.Name)
		}
		if seen[mb.GUID] {
			return fmt.Errorf("mailbox GUID %s listed twice", mb.GUID)
		}
		seen[mb.GUID] = true
		if err := ValidName(mb.Name); err != nil {
			return fmt.Errorf("mailbox %s: %w", mb.GUID, err)
		}
	}
	for g, c := range s.Contents {
		if !seen[g] {
			return fmt.Errorf("contents for unknown mailbox %s", g)
		}
		uids := map[uint32]bool{}
		guids := map[string]bool{}
		for _, m := range c.Messages {
			if m.UID == 0 {
				return fmt.Errorf("mailbox %s: message with UID 0", g)
			}
			if err := ValidGUID(m.GUID); err != nil {
				return fmt.Errorf("mailbox %s UID %d: %w", g, m.UID, err)
			}
			if uids[m.UID] {
				return fmt.Errorf("mailbox %s: UID %d listed twice", g, m.UID)
			}
			if guids[m.GUID] {
				return fmt.Errorf("mailbox %s: message GUID %q listed twice", g, m.GUID)
			}
			uids[m.UID] = true
			guids[m.GUID] = true
		}
		for _, t := range c.Tombstones {
			if err := ValidGUID(t.GUID); err != nil {
				return fmt.Errorf("mailbox %s tombstone UID %d: %w", g, t.UID, err)
			}
			if t.UID == 0 || uids[t.UID] {
				return fmt.Errorf("mailbox %s: tombstone for UID %d clashes", g, t.UID)
			}
			uids[t.UID] = true
		}
	}
	return nil
}

// resolveMailboxes matches mailboxes by GUID, merges names, and resolves
// name collisions by merging or renaming aside. It returns the final
// mailboxes in GUID order.
func resolveMailboxes(sides [2]*Side, plan *Plan) []*box {
	byGUID := map[model.MailboxGUID]*box{}
	for s, sd := range sides {
		for i := range sd.Mailboxes {
			mb := &sd.Mailboxes[i]
			bx := byGUID[mb.GUID]
			if bx == nil {
				bx = &box{guid: mb.GUID}
				byGUID[mb.GUID] = bx
			}
			bx.rec[s] = mb
		}
	}
	var all []*box
	for _, bx := range byGUID {
		for s := 0; s < 2; s++ {
			r := bx.rec[s]
			if r == nil {
				continue
			}
			if bx.name == "" || nameNewer(r.NameT, r.Name, bx.nameT, bx.name) {
				bx.name, bx.nameT = model.NormName(r.Name), r.NameT
			}
		}
		// One GUID with two UIDVALIDITYs: the higher wins. A UIDVALIDITY
		// only ever changes upward (RFC 3501 2.3.1.1; revalidate's fresh
		// values are above all others), so the higher one is the later
		// decision: with the lower one winning, a new value one pair of
		// replicas agreed on was undone by a third replica that still held
		// the old one, and the pair that knew why it was needed made a new
		// one again, for ever. The other side's UIDs are void (another UID
		// space), unless no UID names two messages across the sides: a
		// fresh value given in place keeps the UIDs (revalidate), and a
		// sync that stopped halfway through giving it leaves one side
		// under each value, with one UID space (where the void rule would
		// let that side's expunges reach only by Born stamps).
		// (Two UIDVALIDITYs make the session compare in full: the
		// contents are all there.)
		switch {
		case bx.rec[0] != nil && bx.rec[1] != nil && bx.rec[0].UIDValidity != bx.rec[1].UIDValidity:
			hi := 0
			if bx.rec[1].UIDValidity > bx.rec[0].UIDValidity {
				hi = 1
			}
			bx.uidv = bx.rec[hi].UIDValidity
			if oneUIDSpace(sides[0].Contents[bx.guid], sides[1].Contents[bx.guid]) && !bx.rec[1-hi].Deleted && !bx.rec[1-hi].Missing {
				bx.reval[1-hi] = true
			} else {
				bx.void[1-hi] = true
			}
		case bx.rec[0] != nil:
			bx.uidv = bx.rec[0].UIDValidity
		default:
			bx.uidv = bx.rec[1].UIDValidity
		}
		all = append(all, bx)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].guid.Less(all[j].guid) })

	// Aliases: a mailbox one side merged into another (MergedInto) that
	// the other side still holds is merged into the same one there, when
	// that side does not hold the winner live (else the rules below apply).
	var merged, aliased []*box
	isMerged := map[*box]bool{}
	for _, bx := range all {
		for s := 0; s < 2; s++ {
			o := 1 - s
			r, l := bx.rec[s], bx.rec[o]
			if r == nil || r.MergedInto.IsZero() || l == nil || l.Deleted || isMerged[bx] || len(bx.losersOf()) > 0 {
				continue
			}
			k := aliasTarget(byGUID, s, r.MergedInto)
			if k == nil || k == bx || isMerged[k] || k.losers[o] != nil {
				continue
			}
			if kr := k.rec[o]; kr != nil && !kr.Deleted && !kr.Missing {
				continue
			}
			k.losers[o] = l
			aliased = append(aliased, k)
			isMerged[bx] = true
			merged = append(merged, bx)
			plan.Merged = append(plan.Merged, fmt.Sprintf("%s %s -> %s (alias)", l.Name, bx.guid, k.guid))
		}
	}

	// Name collisions among mailboxes that are (or may stay) alive.
	groups := map[string][]*box{}
	var names []string
	for _, bx := range all {
		if isMerged[bx] || (!bx.alive(0) && !bx.alive(1)) {
			continue
		}
		if groups[bx.name] == nil {
			names = append(names, bx.name)
		}
		groups[bx.name] = append(groups[bx.name], bx)
	}
	sort.Strings(names)
	used := map[string]bool{}
	for _, bx := range all {
		used[bx.name] = true
	}
	for _, n := range names {
		g := groups[n]
		if len(g) < 2 {
			continue
		}
		// The keeper: the lowest GUID known to both sides; else the one
		// that has handed out the most UIDs (an empty mailbox made by a
		// first scan never costs the other side its UIDs), then the lowest.
		keeper := g[0]
		for _, bx := range g[1:] {
			if uidsUsed(bx) > uidsUsed(keeper) {
				keeper = bx
			}
		}
		for _, bx := range g {
			if bx.has(0) && bx.has(1) {
				keeper = bx
				break
			}
		}
		for _, bx := range g {
			if bx == keeper {
				continue
			}
			if s, ok := mergeable(keeper, bx); ok {
				// The loser's records are void (another UIDVALIDITY); the
				// keeper's own records on that side (tombstones of a
				// deleted or missing mailbox) keep their UIDs taken.
				keeper.losers[s] = bx.rec[s]
				merged = append(merged, bx)
				plan.Merged = append(plan.Merged, fmt.Sprintf("%s %s -> %s", n, bx.guid, keeper.guid))
				continue
			}
			// Rename aside, deterministically.
			hexg := bx.guid.String()
			for l := 8; ; l += 4 {
				cand := fmt.Sprintf("%s-%s", n, hexg[:min(l, len(hexg))])
				if !used[cand] || l >= len(hexg) {
					bx.name = cand
					used[cand] = true
					break
				}
			}
			// The rename must win over both sides' names: stamp it after them.
			bx.nameT = maxT(bx) + 1
		}
	}
	for _, m := range merged {
		isMerged[m] = true
	}
	// A mailbox merged through an alias may sit under another name: it
	// moves to the final name first (renames come first in an apply), out
	// of the way of mailboxes the plan creates.
	for _, k := range aliased {
		for s := 0; s < 2; s++ {
			if l := k.losers[s]; l != nil && model.NormName(l.Name) != k.name {
				plan.Sides[s].Renames = append(plan.Sides[s].Renames, MailboxOp{GUID: l.GUID, Name: k.name, NameT: k.nameT, UIDValidity: l.UIDValidity})
			}
		}
	}
	out := all[:0]
	for _, bx := range all {
		if !isMerged[bx] {
			out = append(out, bx)
		}
	}
	return out
}

func (b *box) losersOf() []*model.Mailbox {
	var out []*model.Mailbox
	for s := 0; s < 2; s++ {
		if b.losers[s] != nil {
			out = append(out, b.losers[s])
		}
	}
	return out
}

// aliasTarget follows side s's MergedInto records from g to a mailbox that
// is live on s (at most 16 hops).
func aliasTarget(byGUID map[model.MailboxGUID]*box, s int, g model.MailboxGUID) *box {
	for i := 0; i < 16; i++ {
		bx := byGUID[g]
		if bx == nil || bx.rec[s] == nil {
			return nil
		}
		r := bx.rec[s]
		if !r.Deleted {
			return bx
		}
		if r.MergedInto.IsZero() {
			return nil
		}
		g = r.MergedInto
	}
	return nil
}

func uidsUsed(bx *box) uint32 {
	var n uint32
	for s := 0; s < 2; s++ {
		if bx.rec[s] != nil {
			n = max(n, bx.rec[s].UIDNext)
		}
	}
	return n
}

func maxT(bx *box) int64 {
	var t int64
	for s := 0; s < 2; s++ {
		if bx.rec[s] != nil && bx.rec[s].NameT > t {
			t = bx.rec[s].NameT
		}
	}
	return t
}

// mergeable reports whether loser can merge into keeper, and on which side
// the loser lives: it must be a live mailbox of one side only, and that side
// must not hold the keeper as a live mailbox with a directory.
func mergeable(keeper, loser *box) (int, bool) {
	for s := 0; s < 2; s++ {
		o := 1 - s
		if !(loser.has(s) && !loser.has(o)) || loser.rec[s].Deleted || keeper.losers[s] != nil || len(loser.losersOf()) > 0 {
			continue
		}
		k := keeper.rec[s]
		if k == nil || k.Deleted || k.Missing {
			return s, true
		}
	}
	return 0, false
}

func nameNewer(t1 int64, n1 string, t2 int64, n2 string) bool {
	if t1 != t2 {
		return t1 > t2
	}
	return n1 > n2
}

// sideBox is one side's records of one final mailbox.
type sideBox struct {
	next  uint32
	slots map[uint32]*rec     // non-void records by UID
	guids map[string]*inst    // live instances by message GUID
	exp   map[string][]uint32 // expunge tombstones by GUID
	// Born stamps of a GUID's expunge tombstones: the latest known one
	// (0: none) and the unsure ones (model/born.go)
	born   map[string]int64
	unsure map[string][]int64
	// Born of the expunge tombstone at a UID (0: unknown), for an instance
	// that an expunge reaches through its UID
	expBorn map[uint32]int64
	moved   map[uint32]uint32 // retired UID -> UID it moved to
	// mailbox GUID the records currently live under (the loser's GUID when
	// this side adopts)
	src model.MailboxGUID
}

type rec struct {
	guid string
	tomb *model.Tombstone
	inst *inst
}

type inst struct {
	msg     model.Message
	void    bool // UID does not count
	implied bool // not reported: known to equal the other side's record
	killed  bool
	// killBorn is the Born of the expunge that killed the instance: the
	// tombstone this side records takes it where lower than a known local
	// stamp, or where the local stamp is unknown (index.boxTx.drop).
	killBorn int64
	final    uint32
}

func newSideBox() *sideBox {
	return &sideBox{slots: map[uint32]*rec{}, guids: map[string]*inst{}, exp: map[string][]uint32{}, born: map[string]int64{}, unsure: map[string][]int64{}, expBorn: map[uint32]int64{}, moved: map[uint32]uint32{}}
}

func (sb *sideBox) addMsg(m model.Message, void bool) {
	in := &inst{msg: m, void: void}
	if old, ok := sb.guids[m.GUID]; ok {
		// The same GUID from the mailbox and from a merging loser: keep
		// the non-void one.
		if !old.void || void {
			return
		}
	}
	sb.guids[m.GUID] = in
	if !void {
		sb.slots[m.UID] = &rec{guid: m.GUID, inst: in}
	}
}

func (sb *sideBox) addTomb(t model.Tombstone) {
	tt := t
	if _, ok := sb.slots[t.UID]; !ok {
		sb.slots[t.UID] = &rec{guid: t.GUID, tomb: &tt}
	}
	switch {
	case t.Lost:
		// Only keeps the UID for its GUID: nothing was expunged.
	case t.MovedTo == 0:
		sb.exp[t.GUID] = append(sb.exp[t.GUID], t.UID)
		sb.addBorn(t.GUID, t.Born)
		sb.expBorn[t.UID] = t.Born
	default:
		sb.moved[t.UID] = t.MovedTo
	}
}

// addBorn notes the Born stamp of an expunge tombstone of message g.
func (sb *sideBox) addBorn(g string, b int64) {
	switch {
	case b > 0:
		sb.born[g] = max(sb.born[g], b)
	case b < 0:
		sb.unsure[g] = append(sb.unsure[g], b)
	}
}

// killedBorn reports whether this side's expunges of message g kill an
// instance stamped born by the Born rule (model.KilledByBorn), and with
// which tombstone's stamp.
func (sb *sideBox) killedBorn(g string, born int64) (int64, bool) {
	if tb := sb.born[g]; model.KilledByBorn(born, tb) {
		return tb, true
	}
	for _, tb := range sb.unsure[g] {
		if model.KilledByBorn(born, tb) {
			return tb, true
		}
	}
	return 0, false
}

// free reports whether UID u on this side can name message g: it names g
// already, or it is unused (no record, and not below the side's UIDNEXT,
// since a UID below UIDNEXT may have been used and expunged unseen, and
// Dovecot never takes a new UID below its UIDNEXT).
//
// A UID whose message was Lost with its mailbox's directory is not free,
// not even for that message: the directory made again shows a NEXTUID
// above it (the UIDs this side used stay used, even if the sync stops
// before the message is back), and a Dovecot that read that NEXTUID takes
// a message listed below it later for an expunged one that reappeared
// (and gives it a UID of its own). The message comes back under a fresh
// UID, on both sides.
func (sb *sideBox) free(u uint32, g string) bool {
	r, ok := sb.slots[u]
	if !ok {
		return u >= sb.next
	}
	return r.inst != nil && r.guid == g
}

func mergeBox(sides [2]*Side, bx *box, opt Options, plan *Plan, fv *freshValues) {
	var sb [2]*sideBox
	for s := 0; s < 2; s++ {
		sb[s] = newSideBox()
		if r := bx.rec[s]; r != nil {
			sb[s].next = r.UIDNext
			sb[s].src = r.GUID
			if c := sides[s].Contents[bx.guid]; c != nil {
				for _, m := range c.Messages {
					sb[s].addMsg(m, bx.void[s])
				}
				if !bx.void[s] {
					for _, t := range c.Tombstones {
						sb[s].addTomb(t)
					}
				} else {
					for _, t := range c.Tombstones {
						if t.MovedTo == 0 && !t.Lost {
							sb[s].exp[t.GUID] = append(sb[s].exp[t.GUID], 0)
							sb[s].addBorn(t.GUID, t.Born)
						}
					}
				}
			}
		}
		if l := bx.losers[1-s]; l != nil {
			// The other side's loser is an alias here: what this side
			// expunged under that GUID kills the other side's copies.
			if c := sides[s].Contents[l.GUID]; c != nil {
				for _, t := range c.Tombstones {
					if t.MovedTo == 0 && !t.Lost {
						sb[s].exp[t.GUID] = append(sb[s].exp[t.GUID], 0)
						sb[s].addBorn(t.GUID, t.Born)
					}
				}
			}
		}
		if l := bx.losers[s]; l != nil {
			sb[s].src = l.GUID
			if l.UIDNext > sb[s].next && !bx.void[s] {
				sb[s].next = l.UIDNext
			}
			if c := sides[s].Contents[l.GUID]; c != nil {
				for _, m := range c.Messages {
					sb[s].addMsg(m, true)
				}
			}
		}
		if bx.void[s] {
			// UIDs under another UIDVALIDITY say nothing about this one.
			sb[s].next = 0
		}
	}

	// Incremental: records one side reported below the common base that the
	// other side did not report are unchanged there.
	base, incremental := opt.Base[bx.guid]
	if incremental && !bx.void[0] && !bx.void[1] && bx.losers[0] == nil && bx.losers[1] == nil && bx.has(0) && bx.has(1) {
		for s := 0; s < 2; s++ {
			o := 1 - s
			var uids []uint32
			for u := range sb[s].slots {
				uids = append(uids, u)
			}
			sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
			for _, u := range uids {
				r := sb[s].slots[u]
				if u >= base {
					continue
				}
				if _, ok := sb[o].slots[u]; ok {
					continue
				}
				if _, ok := sb[o].guids[r.guid]; ok {
					continue
				}
				m := model.Message{UID: u, GUID: r.guid}
				if r.inst != nil {
					m = r.inst.msg
					m.Flags = nil
					m.Held = false
				} else if r.tomb != nil {
					m.Born = r.tomb.Born // the instance the tombstone names
				}
				in := &inst{msg: m, implied: true}
				sb[o].guids[r.guid] = in
				sb[o].slots[u] = &rec{guid: r.guid, inst: in}
			}
		}
	}

	// Kill what the other side expunged.
	for s := 0; s < 2; s++ {
		o := 1 - s
		for g, in := range sb[s].guids {
			uids, ok := sb[o].exp[g]
			if !ok {
				continue
			}
			if in.void || bx.void[o] {
				// Its UID says nothing here (a merging loser's message, or
				// a mailbox whose UIDs do not count): only the Born stamps
				// tell. The expunge kills an instance born at or before
				// the latest expunged one; a younger instance, a copy a
				// client made after (moved into a folder that is now being
				// merged), must survive. Where the stamps cannot tell (an
				// unknown one, or an unsure one against a later expunge:
				// model.KilledByBorn) the instance survives: an expunge
				// that does not replicate, rather than a copy put back on
				// purpose lost.
				if tb, ok := sb[o].killedBorn(g, in.msg.Born); ok {
					in.killed, in.killBorn = true, tb
				}
				continue
			}
			// The instance the tombstone names, wherever it lives now: every
			// instance of the GUID born at or before the expunged one (a
			// copy renumbered by another pair's sync reaches a third
			// replica as a plain add, with its Born but without the
			// renumbering record). A copy a client put back later has a
			// later Born and survives. Unsure stamps (an index rebuilt
			// from the disk) kill only their own line of copies, unknown
			// ones nothing (model.KilledByBorn).
			// The other side holding the GUID live at the same UID holds
			// this very instance (a UID never names other content): its
			// expunges named other instances. (Two replicas may hold one
			// instance with different stamps until they learn the better
			// one, and an instance killed and re-added from the peer
			// leaves an expunge tombstone at its old UID.)
			if oi, ok := sb[o].guids[g]; ok && !oi.void && oi.msg.UID == in.msg.UID {
				continue
			}
			if tb, ok := sb[o].killedBorn(g, in.msg.Born); ok {
				in.killed, in.killBorn = true, tb
				continue
			}
			for _, u0 := range uids {
				if reaches(u0, in.msg.UID, sb[0].moved, sb[1].moved) {
					// The very instance the tombstone retired: the
					// tombstone this side records takes its Born where
					// this side's stamp is unknown (index.boxTx.drop).
					in.killed, in.killBorn = true, sb[o].expBorn[u0]
					break
				}
			}
		}
	}

	// Born stamps learned: both sides hold the GUID live at the same UID,
	// so both hold one instance (a UID never names other content), born
	// once. A side whose stamp says less (unsure: an index rebuilt from the
	// disk; or later than the other's, re-stamped by an older twinbox)
	// takes the other's (model.BetterBorn).
	learn := [2]map[string]int64{{}, {}}
	for g, i0 := range sb[0].guids {
		i1, ok := sb[1].guids[g]
		if !ok || i0.void || i1.void || i0.implied || i1.implied || i0.killed || i1.killed || i0.msg.UID != i1.msg.UID {
			continue
		}
		b0, b1 := i0.msg.Born, i1.msg.Born
		switch {
		case model.BetterBorn(b1, b0):
			learn[0][g] = b1
		case model.BetterBorn(b0, b1):
			learn[1][g] = b0
		}
	}

	// Surviving GUIDs, in GUID order.
	var guids []string
	seen := map[string]bool{}
	for s := 0; s < 2; s++ {
		for g, in := range sb[s].guids {
			// A killed instance does not stop the GUID from surviving in
			// the other side's instance (a message expunged and copied back
			// into the mailbox by a client keeps its GUID).
			if !in.killed && !seen[g] {
				seen[g] = true
				guids = append(guids, g)
			}
		}
	}
	sort.Strings(guids)

	taken := map[uint32]bool{}
	final := map[string]uint32{}
	var fresh []string
	var maxUID uint32
	for s := 0; s < 2; s++ {
		for u := range sb[s].slots {
			maxUID = max(maxUID, u)
		}
	}
	for _, g := range guids {
		var u [2]uint32
		for s := 0; s < 2; s++ {
			if in, ok := sb[s].guids[g]; ok && !in.void && !in.killed {
				u[s] = in.msg.UID
			}
		}
		var cands []uint32
		switch {
		case u[0] != 0 && u[0] == u[1]:
			cands = []uint32{u[0]}
		case u[0] != 0 && u[1] != 0:
			hi, lo := max(u[0], u[1]), min(u[0], u[1])
			cands = []uint32{hi, lo}
		case u[0] != 0:
			cands = []uint32{u[0]}
		case u[1] != 0:
			cands = []uint32{u[1]}
		}
		placed := false
		for _, c := range cands {
			if !taken[c] && sb[0].free(c, g) && sb[1].free(c, g) {
				final[g], taken[c], placed = c, true, true
				break
			}
		}
		if !placed {
			fresh = append(fresh, g)
		}
	}
	next := max(sb[0].next, sb[1].next, maxUID+1)
	if next == 0 {
		next = 1
	}
	for _, g := range fresh {
		final[g] = next
		next++
		// Renumbering counts only for messages a client already knew by a
		// UID: both-sides void (merge) renumbers are expected.
		for s := 0; s < 2; s++ {
			if in, ok := sb[s].guids[g]; ok && !in.void && !in.killed {
				plan.Renumbered++
				break
			}
		}
	}

	// Final flags per GUID.
	flags := map[string]model.Flags{}
	for _, g := range guids {
		var f model.Flags
		for s := 0; s < 2; s++ {
			if in, ok := sb[s].guids[g]; ok && !in.killed {
				f = model.Merge(f, in.msg.Flags)
			}
		}
		flags[g] = f
	}

	// A live mailbox of one side that merges into this one keeps it alive
	// even when empty: the deleting side never saw it (dropping the merge
	// here would leave the loser planned nowhere).
	finalAlive := len(guids) > 0 || bx.losers[0] != nil || bx.losers[1] != nil || (!bx.deletedOn(0) && !bx.deletedOn(1))
	if !finalAlive {
		// Deleted on purpose and nothing the deleter never saw survives.
		for s := 0; s < 2; s++ {
			if bx.alive(s) {
				if r := bx.rec[s]; r != nil && !r.Deleted && r.Name != bx.name {
					// Out of the way first: its directory may hold a name
					// that a mailbox created by this plan takes.
					plan.Sides[s].Renames = append(plan.Sides[s].Renames, MailboxOp{GUID: bx.guid, Name: bx.name, NameT: bx.nameT, UIDValidity: bx.uidv})
				}
				bp := BoxPlan{GUID: bx.guid}
				for _, g := range sortedKeys(sb[s].guids) {
					addExpunge(&bp, sb[s].guids[g])
				}
				if !bp.Empty() {
					plan.Sides[s].Boxes = append(plan.Sides[s].Boxes, bp)
				}
				var dt int64
				for t := 0; t < 2; t++ {
					if bx.deletedOn(t) {
						dt = max(dt, bx.rec[t].DeletedT)
					}
				}
				plan.Sides[s].Deletes = append(plan.Sides[s].Deletes, MailboxOp{GUID: bx.guid, Name: bx.name, DeletedT: dt})
			}
		}
		return
	}

	// Made again on a side that deleted it with intent (kept alive by
	// mail the deleter never saw), or restored on a side where its
	// directory vanished without one (rm -rf, Missing): Dovecot may have
	// given UIDs there after that side's last scan, which no index saw,
	// and under the old UIDVALIDITY this plan or a later one could give
	// them to other messages (contract §3.1). As a mailbox made again
	// under its name gets from Dovecot, a new value. The other side's
	// clients lose nothing they would have kept: a restored mailbox's
	// messages come back under new UIDs anyway (a Lost UID is not free,
	// sideBox.free). Also where a folder of that side merges into it:
	// under the old value the name shows that side's clients the deleted
	// folder's UIDs again.
	for s := 0; s < 2; s++ {
		r := bx.rec[s]
		switch {
		case r == nil || bx.fresh:
		case r.Deleted:
			fv.give(bx, fmt.Sprintf("made again on side %s, which deleted it", sides[s].ReplicaID))
		case r.Missing:
			fv.give(bx, fmt.Sprintf("restored on side %s, where its directory vanished", sides[s].ReplicaID))
		}
	}

	for s := 0; s < 2; s++ {
		o := 1 - s
		sp := &plan.Sides[s]
		switch {
		case bx.losers[s] != nil:
			sp.Adopts = append(sp.Adopts, Adopt{From: bx.losers[s].GUID, To: bx.guid, Name: bx.name, NameT: bx.nameT, UIDValidity: bx.uidv})
		case bx.rec[s] == nil || bx.rec[s].Deleted || bx.rec[s].Missing:
			sp.Creates = append(sp.Creates, MailboxOp{GUID: bx.guid, Name: bx.name, NameT: bx.nameT, UIDValidity: bx.uidv})
		case bx.void[s] || bx.reval[s]:
			if bx.reval[s] && (bx.rec[s].Name != bx.name || bx.rec[s].NameT != bx.nameT) {
				// Moved with the other renames (they come first, in an
				// order that frees each target before it is taken), then
				// given its new value where it stands.
				sp.Renames = append(sp.Renames, MailboxOp{GUID: bx.guid, Name: bx.name, NameT: bx.nameT, UIDValidity: bx.rec[s].UIDValidity})
			}
			sp.Adopts = append(sp.Adopts, Adopt{From: bx.guid, To: bx.guid, Name: bx.name, NameT: bx.nameT, UIDValidity: bx.uidv})
		case bx.rec[s].Name != bx.name || bx.rec[s].NameT != bx.nameT:
			sp.Renames = append(sp.Renames, MailboxOp{GUID: bx.guid, Name: bx.name, NameT: bx.nameT, UIDValidity: bx.uidv})
		}

		bp := BoxPlan{GUID: bx.guid, UIDNext: next}
		// A mailbox (re)created here starts with UIDNEXT 1 on disk: give it
		// the UIDNEXT its records reached, even with nothing to add.
		if bx.rec[s] == nil || bx.rec[s].Deleted || bx.rec[s].Missing || bx.void[s] || bx.reval[s] || sb[s].next < next {
			bp.BumpNext = true
		}
		for _, g := range sortedKeys(sb[s].guids) {
			in := sb[s].guids[g]
			if in.killed {
				addExpunge(&bp, in)
			}
		}
		for _, g := range guids {
			fu, ff := final[g], flags[g]
			in, ok := sb[s].guids[g]
			if !ok || in.killed {
				src, sok := sb[o].guids[g]
				if !sok || src.killed || src.msg.Held {
					continue // nothing to copy from: stays held over there
				}
				m := src.msg
				m.UID, m.Flags, m.Modseq, m.Held = fu, ff, 0, false
				bp.Adds = append(bp.Adds, Add{Msg: m, SourceBox: sb[o].src, SourceUID: src.msg.UID})
				continue
			}
			if in.void || in.msg.UID != fu {
				bp.Moves = append(bp.Moves, Move{GUID: g, From: in.msg.UID, To: fu})
			} else if b, ok := learn[s][g]; ok {
				bp.Borns = append(bp.Borns, BornSet{UID: fu, GUID: g, Born: b})
			}
			if !model.Equal(in.msg.Flags, ff) {
				bp.Flags = append(bp.Flags, FlagSet{UID: fu, GUID: g, Flags: ff})
			}
		}
		for _, g := range guids {
			if in, ok := sb[s].guids[g]; ok && in.msg.Held && !in.killed {
				plan.Held[s]++
			}
		}
		if !bp.Empty() {
			sp.Boxes = append(sp.Boxes, bp)
		}
	}
}

func addExpunge(bp *BoxPlan, in *inst) {
	e := Expunge{UID: in.msg.UID, GUID: in.msg.GUID, Born: in.killBorn}
	if in.msg.Held {
		bp.Release = append(bp.Release, e)
	} else {
		bp.Expunges = append(bp.Expunges, e)
	}
}

// reaches reports whether UID from leads to UID to through sync renumberings.
func reaches(from, to uint32, m0, m1 map[uint32]uint32) bool {
	u := from
	for i := 0; i < 64; i++ {
		if u == to {
			return true
		}
		n, ok := m0[u]
		if !ok {
			n, ok = m1[u]
		}
		if !ok || n == u {
			return false
		}
		u = n
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func mergeSubs(sides [2]*Side, plan *Plan) {
	var cur [2]map[string]model.Subscription
	win := map[string]model.Subscription{}
	for s := 0; s < 2; s++ {
		cur[s] = map[string]model.Subscription{}
		for _, sub := range sides[s].Subs {
			cur[s][sub.Name] = sub
			if w, ok := win[sub.Name]; !ok || sub.Newer(w) {
				win[sub.Name] = sub
			}
		}
	}
	for _, n := range sortedKeys(win) {
		w := win[n]
		for s := 0; s < 2; s++ {
			if c, ok := cur[s][n]; !ok && !w.Subscribed && w.T == 0 {
				continue
			} else if !ok || c != w {
				plan.Sides[s].Subs = append(plan.Sides[s].Subs, w)
			}
		}
	}
}

// revalidate gives a fresh UIDVALIDITY to each final mailbox that would
// show a side a name and UIDVALIDITY that side knew for another mailbox
// (contract §3.1: a client that cached UIDs under that name and
// UIDVALIDITY would take them for this mailbox's messages). Dovecot's
// per-host counter keeps that from happening on one host, but two hosts'
// counters hand out the same values, and a mailbox this plan makes on a
// side carries the other side's value:
//
//   - a side that gets a mailbox it never held (created, or merged from
//     one of its own) must not know another mailbox by that name with that
//     UIDVALIDITY or a higher one (RFC 3501 2.3.1.1: a mailbox made again
//     under a name gets a higher value);
//   - a side that gets back a mailbox it held (restored, revived, renamed
//     to the name) must not know another one by that name with that very
//     value (a RENAME keeps its UIDVALIDITY, in Dovecot too).
//
// "Knows" is what its index reports: live mailboxes and the records of
// deleted and merged ones, by their last names.
//
// The fresh value is above every UIDVALIDITY either side reports and both
// sides' counters, the same whichever side started (one more for each such
// mailbox, in GUID order). Both sides then hold the mailbox under it: the
// side that holds it live adopts it in place (its UIDs stay; no client
// knows any under the new value).
func revalidate(sides [2]*Side, boxes []*box, fresh *freshValues) {
	for _, bx := range boxes {
		if !bx.alive(0) && !bx.alive(1) {
			continue // stays deleted
		}
		clash := ""
		for s := 0; s < 2 && clash == ""; s++ {
			r, l := bx.rec[s], bx.losers[s]
			newHere := r == nil || l != nil || bx.void[s]
			if !newHere && !r.Deleted && !r.Missing && model.NormName(r.Name) == bx.name {
				continue // held here as it is
			}
			for i := range sides[s].Mailboxes {
				m := &sides[s].Mailboxes[i]
				if m.GUID == bx.guid || model.NormName(m.Name) != bx.name || aliasOf(sides[s], m, bx.guid) {
					continue
				}
				if l != nil && (m.GUID == l.GUID || aliasOf(sides[s], m, l.GUID)) {
					continue // the mailbox merging into it, or an alias of that one
				}
				if m.UIDValidity == bx.uidv || (newHere && m.UIDValidity > bx.uidv) {
					clash = fmt.Sprintf("side %s knew %s with UIDVALIDITY %d", sides[s].ReplicaID, m.GUID, m.UIDValidity)
					break
				}
			}
		}
		if clash != "" {
			fresh.give(bx, clash)
		}
	}
}

// freshValues hands out the fresh UIDVALIDITYs of one plan: above every
// value either side reports and both counters, one more each time, in the
// order the boxes are merged (GUID order), so both sides compute the same.
type freshValues struct {
	top  uint32
	plan *Plan
}

// give gives bx a fresh UIDVALIDITY, why being the reason, and marks the
// sides that hold it live to adopt it in place (its UIDs stay: no client
// knows any under the new value).
func (f *freshValues) give(bx *box, why string) {
	if f.top == ^uint32(0) {
		// No value left above them all (never with Dovecot's counters,
		// which start at the time): keep the old one.
		return
	}
	f.top++
	f.plan.Revalidated = append(f.plan.Revalidated, fmt.Sprintf("%s %s %d -> %d (%s)", bx.name, bx.guid, bx.uidv, f.top, why))
	bx.uidv, bx.fresh = f.top, true
	for s := 0; s < 2; s++ {
		if r := bx.rec[s]; r != nil && !r.Deleted && !r.Missing && !bx.void[s] && bx.losers[s] == nil {
			bx.reval[s] = true
		}
	}
}

// oneUIDSpace reports whether two sides' records of one mailbox can be
// read as one UID space: no UID names two messages across them (records
// and tombstones alike). Unknown contents are not.
func oneUIDSpace(a, b *Contents) bool {
	if a == nil || b == nil {
		return false
	}
	named := make(map[uint32]string, len(a.Messages)+len(a.Tombstones))
	for _, m := range a.Messages {
		named[m.UID] = m.GUID
	}
	for _, t := range a.Tombstones {
		named[t.UID] = t.GUID
	}
	for _, m := range b.Messages {
		if g, ok := named[m.UID]; ok && g != m.GUID {
			return false
		}
	}
	for _, t := range b.Tombstones {
		if g, ok := named[t.UID]; ok && g != t.GUID {
			return false
		}
	}
	return true
}

// aliasOf reports whether side's record m was merged into mailbox g (its
// MergedInto records lead there, in at most 16 hops): its UIDs are g's
// (a merge moves the loser's messages to UIDs above both mailboxes'
// UIDNEXT, so the pair's UIDs never name two messages).
func aliasOf(side *Side, m *model.Mailbox, g model.MailboxGUID) bool {
	for i := 0; i < 16 && !m.MergedInto.IsZero(); i++ {
		if m.MergedInto == g {
			return true
		}
		next := m.MergedInto
		m = nil
		for j := range side.Mailboxes {
			if side.Mailboxes[j].GUID == next {
				m = &side.Mailboxes[j]
				break
			}
		}
		if m == nil {
			return false
		}
	}
	return false
}

// highestUIDValidity is the highest value of both sides' counters and of
// every mailbox record they report.
func highestUIDValidity(sides [2]*Side) uint32 {
	var top uint32
	for s := 0; s < 2; s++ {
		top = max(top, sides[s].UIDValidity)
		for i := range sides[s].Mailboxes {
			top = max(top, sides[s].Mailboxes[i].UIDValidity)
		}
	}
	return top
}

// raiseCounters asks each side whose UIDVALIDITY counter is below top to
// raise it there (SidePlan's UIDValidityFloor): Dovecot then gives a
// mailbox made later on that side a value no mailbox of either side ever
// had. top is the highest value either side's counter handed out, any
// mailbox of either side carries, or the plan gives (every value a plan
// gives a mailbox is one of its records' or a fresh one: freshValues.top).
func raiseCounters(sides [2]*Side, plan *Plan, top uint32) {
	for s := 0; s < 2; s++ {
		if sides[s].UIDValidity < top {
			plan.Sides[s].UIDValidityFloor = top
		}
	}
}
