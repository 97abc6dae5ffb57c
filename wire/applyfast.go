package wire

import (
	"encoding/hex"
	"slices"
	"strconv"

	"github.com/twinbox-mail/twinbox/internal/jsonfast"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

// decodeApplyFast decodes an apply request whose plan has no mailbox
// operations, subscriptions or message work but the mailboxes' UIDNEXT
// and add counts (a no-change sync's, with a plan entry per mailbox), as
// the client writes it, into req (a zero value). It takes only the exact
// keys json.Marshal writes, each once, and null for every list but
// Boxes: anything else reports false and json.Unmarshal decides, so what
// it takes decodes to what json.Unmarshal gives.
func decodeApplyFast(raw []byte, req *applyRequest) bool {
	p := jsonfast.New(raw)
	var seen [2]bool
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "plan":
			if seen[0] {
				return false
			}
			seen[0] = true
			return planFast(p, &req.Plan)
		case "chunks":
			if seen[1] {
				return false
			}
			seen[1] = true
			return p.IntTo(&req.Chunks)
		}
		return false
	}) && p.End()
}

func planFast(p *jsonfast.Parser, sp *merge.SidePlan) bool {
	var seen [6]bool
	once := func(i int) bool {
		if seen[i] {
			return false
		}
		seen[i] = true
		return true
	}
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "Renames":
			return once(0) && p.Null()
		case "Creates":
			return once(1) && p.Null()
		case "Adopts":
			return once(2) && p.Null()
		case "Deletes":
			return once(3) && p.Null()
		case "Subs":
			return once(4) && p.Null()
		case "Boxes":
			if !once(5) {
				return false
			}
			if p.Null() {
				sp.Boxes = nil
				return true
			}
			sp.Boxes = []merge.BoxPlan{} // ([] is an empty slice, not nil)
			return p.Array(func() bool {
				var bp merge.BoxPlan
				ok := boxPlanFast(p, &bp)
				sp.Boxes = append(sp.Boxes, bp)
				return ok
			})
		}
		return false
	})
}

func boxPlanFast(p *jsonfast.Parser, bp *merge.BoxPlan) bool {
	var seen [11]bool
	once := func(i int) bool {
		if seen[i] {
			return false
		}
		seen[i] = true
		return true
	}
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "GUID":
			return once(0) && p.GUIDTo(&bp.GUID)
		case "UIDNext":
			return once(1) && p.Uint32To(&bp.UIDNext)
		case "Reset":
			return once(2) && p.BoolTo(&bp.Reset)
		case "BumpNext":
			return once(3) && p.BoolTo(&bp.BumpNext)
		case "Exact":
			return once(4) && p.BoolTo(&bp.Exact)
		case "add_count":
			return once(5) && p.IntTo(&bp.AddCount)
		case "Adds":
			return once(6) && p.Null()
		case "Moves":
			return once(7) && p.Null()
		case "Flags":
			return once(8) && p.Null()
		case "Expunges":
			return once(9) && p.Null()
		case "Release":
			return once(10) && p.Null()
		}
		return false // (Borns and anything else: the long way)
	})
}

// appendApplyFast appends the bytes json.Marshal writes for req when its
// plan is of the kind decodeApplyFast takes (only mailbox entries, every
// other list nil), and reports false, appending nothing, for any other.
func appendApplyFast(dst []byte, req *applyRequest) ([]byte, bool) {
	sp := &req.Plan
	if sp.Renames != nil || sp.Creates != nil || sp.Adopts != nil || sp.Deletes != nil || sp.Subs != nil || sp.UIDValidityFloor != 0 {
		return dst, false
	}
	for i := range sp.Boxes {
		b := &sp.Boxes[i]
		if b.Adds != nil || b.Moves != nil || b.Flags != nil || b.Expunges != nil || b.Release != nil || len(b.Borns) > 0 {
			return dst, false
		}
	}
	dst = slices.Grow(dst, 128+160*len(sp.Boxes))
	dst = append(dst, `{"plan":{"Renames":null,"Creates":null,"Adopts":null,"Boxes":`...)
	if sp.Boxes == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range sp.Boxes {
			b := &sp.Boxes[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"GUID":"`...)
			dst = hex.AppendEncode(dst, b.GUID[:])
			dst = append(dst, `","UIDNext":`...)
			dst = strconv.AppendUint(dst, uint64(b.UIDNext), 10)
			dst = append(dst, `,"Reset":`...)
			dst = strconv.AppendBool(dst, b.Reset)
			dst = append(dst, `,"BumpNext":`...)
			dst = strconv.AppendBool(dst, b.BumpNext)
			dst = append(dst, `,"Exact":`...)
			dst = strconv.AppendBool(dst, b.Exact)
			dst = append(dst, `,"Adds":null`...)
			if b.AddCount != 0 {
				dst = append(dst, `,"add_count":`...)
				dst = strconv.AppendInt(dst, int64(b.AddCount), 10)
			}
			dst = append(dst, `,"Moves":null,"Flags":null,"Expunges":null,"Release":null}`...)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"Deletes":null,"Subs":null},"chunks":`...)
	dst = strconv.AppendInt(dst, int64(req.Chunks), 10)
	return append(dst, '}'), true
}
