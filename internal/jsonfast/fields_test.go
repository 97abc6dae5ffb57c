package jsonfast

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// TestEncodedTypesKeepTheirFields pins the JSON fields of the types that
// the hand-written encoders write field by field (AppendBeginReply,
// AppendApplyResult, and wire's appendApplyFast for SidePlan and BoxPlan):
// a field added to one of them would be dropped from the wire without a
// word, since the encoders' tests compare with json.Marshal only on the
// fields their generators fill. When this fails, teach the encoder (and
// its decoder, and the generator of its test) the new field, then update
// the list here.
func TestEncodedTypesKeepTheirFields(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{replica.BeginReply{}, "info mailboxes subs pair held uidvalidity"},
		{replica.Info{}, "replica_id index_id user root"},
		{model.Mailbox{}, "guid name name_t uidvalidity uidnext modseq epoch deleted deleted_t special messages missing merged_into"},
		{model.Subscription{}, "name sub t"},
		{replica.HeldInfo{}, "mailbox count"},
		{replica.PairState{}, "peer_index_id sync_id boxes"},
		{replica.PairBoxState{}, "base sent epoch peer_epoch"},
		{replica.ApplyResult{}, "added linked fetched expunged flagged moved bytes mailbox_ops changed skipped epochs"},
		{merge.SidePlan{}, "Renames Creates Adopts Boxes Deletes Subs UIDValidityFloor"},
		{merge.BoxPlan{}, "GUID UIDNext Reset BumpNext Exact Adds add_count Moves Flags Expunges Release Borns"},
	} {
		if got := jsonFields(reflect.TypeOf(c.v)); got != c.want {
			t.Errorf("%T's JSON fields are %q, the hand-written encoders know %q", c.v, got, c.want)
		}
	}
}

func jsonFields(ty reflect.Type) string {
	var out []string
	for i := range ty.NumField() {
		f := ty.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		out = append(out, name)
	}
	return strings.Join(slices.Clip(out), " ")
}
