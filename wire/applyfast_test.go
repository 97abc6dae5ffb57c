package wire

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
)

func randApplyRequest(rng *rand.Rand) applyRequest {
	var req applyRequest
	req.Chunks = rng.IntN(3) - rng.IntN(2)
	sp := &req.Plan
	switch rng.IntN(5) {
	case 0:
	case 1:
		sp.Boxes = []merge.BoxPlan{}
	default:
		for i := 0; i < rng.IntN(45); i++ {
			var g model.MailboxGUID
			for j := range g {
				g[j] = byte(rng.IntN(256))
			}
			bp := merge.BoxPlan{GUID: g, UIDNext: rng.Uint32(), Reset: rng.IntN(9) == 0, BumpNext: rng.IntN(5) == 0, Exact: rng.IntN(9) == 0}
			if rng.IntN(6) == 0 {
				bp.AddCount = rng.IntN(1000)
			}
			switch rng.IntN(30) {
			case 0:
				bp.Moves = []merge.Move{{GUID: "m", From: 1, To: 2}}
			case 1:
				bp.Flags = []merge.FlagSet{{UID: 3, GUID: "f"}}
			case 2:
				bp.Expunges = []merge.Expunge{{UID: 4, GUID: "e", Born: 9}}
			case 3:
				bp.Release = []merge.Expunge{}
			case 4:
				bp.Borns = []merge.BornSet{{UID: 5, GUID: "b", Born: -1}}
			case 5:
				bp.Adds = []merge.Add{{SourceUID: 7}}
			}
			sp.Boxes = append(sp.Boxes, bp)
		}
	}
	switch rng.IntN(12) {
	case 0:
		sp.Creates = []merge.MailboxOp{{Name: "x"}}
	case 1:
		sp.Subs = []model.Subscription{{Name: "s", Subscribed: true}}
	case 2:
		sp.Renames = []merge.MailboxOp{}
	case 3:
		sp.Deletes = []merge.MailboxOp{{Name: "d", DeletedT: 5}}
	case 4:
		sp.Adopts = []merge.Adopt{{Name: "a"}}
	case 5:
		sp.UIDValidityFloor = rng.Uint32()
	}
	return req
}

// checkApplyFast: whatever decodeApplyFast takes, json.Unmarshal takes too
// and decodes to the same value.
func checkApplyFast(t *testing.T, raw []byte) bool {
	t.Helper()
	var fast applyRequest
	if !decodeApplyFast(raw, &fast) {
		return false
	}
	var slow applyRequest
	if err := json.Unmarshal(raw, &slow); err != nil {
		t.Fatalf("decodeApplyFast took %s, which json.Unmarshal refuses: %v", raw, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%s:\ndecodeApplyFast %+v\njson.Unmarshal  %+v", raw, fast, slow)
	}
	return true
}

// TestDecodeApplyFastMatchesJSON: the server's fast apply-request decoder
// gives json.Unmarshal's value for every request it takes (random plans as
// the client writes them, and damaged copies: other key cases, duplicate
// keys, cut or changed bytes), and it takes the plans of a no-change sync.
func TestDecodeApplyFastMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	taken, empty := 0, 0
	for i := 0; i < 4000; i++ {
		req := randApplyRequest(rng)
		raw, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		simple := req.Plan.Renames == nil && req.Plan.Creates == nil && req.Plan.Adopts == nil && req.Plan.Deletes == nil && req.Plan.Subs == nil && req.Plan.UIDValidityFloor == 0
		for _, b := range req.Plan.Boxes {
			simple = simple && b.Adds == nil && b.Moves == nil && b.Flags == nil && b.Expunges == nil && b.Release == nil && b.Borns == nil
		}
		if checkApplyFast(t, raw) {
			taken++
		} else if simple {
			t.Fatalf("a plan with only mailbox entries was not taken: %s", raw)
		}
		if simple && len(req.Plan.Boxes) > 0 {
			empty++
		}
		// Damaged copies.
		for j := 0; j < 4; j++ {
			d := bytes.Clone(raw)
			switch rng.IntN(6) {
			case 0:
				d = bytes.Replace(d, []byte(`"UIDNext"`), []byte(`"uidnext"`), 1)
			case 1:
				d = bytes.Replace(d, []byte(`"Reset":false`), []byte(`"Reset":false,"Reset":true`), 1)
			case 2:
				d = bytes.Replace(d, []byte(`"chunks":`), []byte(`"chunks":1,"chunks":`), 1)
			case 3:
				if len(d) > 0 {
					d = d[:rng.IntN(len(d))]
				}
			case 4:
				if len(d) > 0 {
					d[rng.IntN(len(d))] = " \"{}[],:0-1e.x\\nulfase"[rng.IntN(22)]
				}
			case 5:
				d = bytes.Replace(d, []byte(`"GUID":"`), []byte(`"GUID":"0`), 1)
			}
			checkApplyFast(t, d)
		}
	}
	if taken < 1000 || empty < 200 {
		t.Fatalf("taken %d, no-change-like plans %d: the comparison hardly checks the fast path", taken, empty)
	}
}

// TestAppendApplyFastIsJSONMarshal: for the plans it takes, the client's
// apply-request encoder writes json.Marshal's bytes; it refuses every
// other plan; and all it writes, decodeApplyFast takes.
func TestAppendApplyFastIsJSONMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 11))
	taken := 0
	for i := 0; i < 4000; i++ {
		req := randApplyRequest(rng)
		want, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendApplyFast([]byte("x"), &req)
		if !ok {
			if string(got) != "x" {
				t.Fatalf("refused, but appended %s", got)
			}
			if decodeApplyFast(want, &applyRequest{}) {
				t.Fatalf("refused a plan decodeApplyFast takes: %s", want)
			}
			continue
		}
		taken++
		if !bytes.Equal(got[1:], want) {
			t.Fatalf("appendApplyFast %s\njson.Marshal    %s", got[1:], want)
		}
		if !checkApplyFast(t, got[1:]) {
			t.Fatalf("decodeApplyFast refuses what appendApplyFast wrote: %s", got[1:])
		}
	}
	if taken < 1000 {
		t.Fatalf("only %d plans taken", taken)
	}
}
