package merge

import (
	"sort"

	"github.com/twinbox-mail/twinbox/model"
)

// mergeBackup makes side 1 an exact copy of side 0: same mailboxes (GUID,
// name, UIDVALIDITY), same UID -> message, same flags, same subscriptions.
// Mailboxes of side 1 that cannot be brought there by adding, flagging and
// expunging are reset: their UID list is rewritten from the source (existing
// files with a wanted GUID are kept).
func mergeBackup(sides [2]*Side, opt Options) (*Plan, error) {
	src, dst := sides[0], sides[1]
	plan := &Plan{}
	sp := &plan.Sides[1]

	dstBy := map[model.MailboxGUID]*model.Mailbox{}
	dstByName := map[string]*model.Mailbox{}
	for i := range dst.Mailboxes {
		m := &dst.Mailboxes[i]
		dstBy[m.GUID] = m
		if !m.Deleted {
			dstByName[model.NormName(m.Name)] = m
		}
	}
	srcBoxes := append([]model.Mailbox(nil), src.Mailboxes...)
	sort.Slice(srcBoxes, func(i, j int) bool { return srcBoxes[i].GUID.Less(srcBoxes[j].GUID) })
	claimed := map[model.MailboxGUID]bool{}
	for _, m := range srcBoxes {
		if !m.Deleted {
			if d := dstBy[m.GUID]; d != nil && !d.Deleted {
				claimed[d.GUID] = true
			}
		}
	}
	for _, m := range srcBoxes {
		if m.Deleted {
			continue
		}
		name := model.NormName(m.Name)
		op := MailboxOp{GUID: m.GUID, Name: name, NameT: m.NameT, UIDValidity: m.UIDValidity}
		reset := false
		var d *model.Mailbox
		if cand := dstBy[m.GUID]; cand != nil && !cand.Deleted {
			d = cand
			switch {
			case d.UIDValidity != m.UIDValidity:
				sp.Adopts = append(sp.Adopts, Adopt{From: d.GUID, To: m.GUID, Name: name, NameT: m.NameT, UIDValidity: m.UIDValidity})
				reset = true
			case d.Missing:
				sp.Creates = append(sp.Creates, op)
			case d.Name != name || d.NameT != m.NameT:
				sp.Renames = append(sp.Renames, op)
			}
		} else if cand := dstByName[name]; cand != nil && !claimed[cand.GUID] {
			d = cand
			claimed[d.GUID] = true
			sp.Adopts = append(sp.Adopts, Adopt{From: d.GUID, To: m.GUID, Name: name, NameT: m.NameT, UIDValidity: m.UIDValidity})
			reset = true
		} else {
			sp.Creates = append(sp.Creates, op)
		}

		var sc, dc Contents
		if c := src.Contents[m.GUID]; c != nil {
			sc = *c
		}
		var dnext uint32
		if d != nil {
			if c := dst.Contents[d.GUID]; c != nil {
				dc = *c
			}
			dnext = d.UIDNext
		}
		bp := BoxPlan{GUID: m.GUID, UIDNext: max(m.UIDNext, 1), Exact: true}
		dslots := map[uint32]*model.Message{}
		dtomb := map[uint32]model.Tombstone{}
		for i := range dc.Messages {
			dslots[dc.Messages[i].UID] = &dc.Messages[i]
		}
		for _, t := range dc.Tombstones {
			dtomb[t.UID] = t
		}
		if !reset {
			if dnext > m.UIDNext {
				reset = true
			}
			for _, sm := range sc.Messages {
				dm := dslots[sm.UID]
				t, tomb := dtomb[sm.UID]
				if dm == nil && t.Lost && t.GUID == sm.GUID {
					continue // the copy's directory vanished: refill it
				}
				if (dm != nil && dm.GUID != sm.GUID) || (dm == nil && (tomb || sm.UID < dnext)) {
					reset = true
					break
				}
			}
		}
		if reset {
			bp.Reset, bp.BumpNext = true, true
			for _, sm := range sc.Messages {
				if sm.Held {
					continue
				}
				am := sm
				am.Modseq = 0
				bp.Adds = append(bp.Adds, Add{Msg: am, SourceBox: m.GUID, SourceUID: sm.UID})
			}
			sp.Boxes = append(sp.Boxes, bp)
			continue
		}
		want := map[uint32]bool{}
		for _, sm := range sc.Messages {
			want[sm.UID] = true
			dm := dslots[sm.UID]
			if dm == nil {
				if sm.Held {
					continue
				}
				am := sm
				am.Modseq = 0
				bp.Adds = append(bp.Adds, Add{Msg: am, SourceBox: m.GUID, SourceUID: sm.UID})
				continue
			}
			if !model.Equal(dm.Flags, sm.Flags) {
				bp.Flags = append(bp.Flags, FlagSet{UID: sm.UID, GUID: sm.GUID, Flags: sm.Flags})
			}
		}
		for _, dm := range dc.Messages {
			if !want[dm.UID] {
				e := Expunge{UID: dm.UID, GUID: dm.GUID}
				if dm.Held {
					bp.Release = append(bp.Release, e)
				} else {
					bp.Expunges = append(bp.Expunges, e)
				}
			}
		}
		sort.Slice(bp.Expunges, func(i, j int) bool { return bp.Expunges[i].UID < bp.Expunges[j].UID })
		if dnext < bp.UIDNext {
			bp.BumpNext = true
		}
		if !bp.Empty() {
			sp.Boxes = append(sp.Boxes, bp)
		}
	}
	var dels []model.Mailbox
	for _, d := range dst.Mailboxes {
		if !d.Deleted && !claimed[d.GUID] {
			dels = append(dels, d)
		}
	}
	sort.Slice(dels, func(i, j int) bool { return dels[i].GUID.Less(dels[j].GUID) })
	for _, d := range dels {
		bp := BoxPlan{GUID: d.GUID}
		if c := dst.Contents[d.GUID]; c != nil {
			for _, dm := range c.Messages {
				e := Expunge{UID: dm.UID, GUID: dm.GUID}
				if dm.Held {
					bp.Release = append(bp.Release, e)
				} else {
					bp.Expunges = append(bp.Expunges, e)
				}
			}
		}
		if !bp.Empty() {
			sp.Boxes = append(sp.Boxes, bp)
		}
		sp.Deletes = append(sp.Deletes, MailboxOp{GUID: d.GUID, Name: d.Name})
	}

	want := map[string]model.Subscription{}
	for _, s := range src.Subs {
		want[s.Name] = s
	}
	have := map[string]model.Subscription{}
	for _, s := range dst.Subs {
		have[s.Name] = s
	}
	names := map[string]bool{}
	for n := range want {
		names[n] = true
	}
	for n := range have {
		names[n] = true
	}
	for _, n := range sortedKeys(names) {
		w, ok := want[n]
		if !ok {
			w = model.Subscription{Name: n}
		}
		if h, hok := have[n]; (hok && h.Subscribed != w.Subscribed) || (!hok && w.Subscribed) {
			sp.Subs = append(sp.Subs, w)
		}
	}
	return plan, nil
}
