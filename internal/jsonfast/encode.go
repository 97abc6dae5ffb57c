package jsonfast

import (
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// AppendBeginReply appends to dst exactly the bytes json.Marshal(r) gives
// (fields in order, the same omissions, the saved state's mailboxes sorted
// by their hex GUIDs, strings escaped as encoding/json escapes them): the
// server writes one begin reply per sync, and its mailbox list and saved
// state grow with the mailboxes. r must not be nil.
func AppendBeginReply(dst []byte, r *replica.BeginReply) []byte {
	n := 256 + 256*len(r.Mailboxes) + 64*len(r.Subs) + 64*len(r.Held)
	if r.Pair != nil {
		n += 128 * len(r.Pair.Boxes)
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, `{"info":`...)
	dst = appendInfo(dst, &r.Info)
	dst = append(dst, `,"mailboxes":`...)
	if r.Mailboxes == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range r.Mailboxes {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendMailbox(dst, &r.Mailboxes[i])
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"subs":`...)
	if r.Subs == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i, s := range r.Subs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendString(dst, s.Name)
			dst = append(dst, `,"sub":`...)
			dst = strconv.AppendBool(dst, s.Subscribed)
			dst = append(dst, `,"t":`...)
			dst = strconv.AppendInt(dst, s.T, 10)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if r.Pair != nil {
		dst = append(dst, `,"pair":`...)
		dst = appendPairState(dst, r.Pair)
	}
	if len(r.Held) > 0 {
		dst = append(dst, `,"held":[`...)
		for i, h := range r.Held {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"mailbox":`...)
			dst = appendString(dst, h.Mailbox)
			dst = append(dst, `,"count":`...)
			dst = strconv.AppendInt(dst, int64(h.Count), 10)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if r.UIDValidity != 0 {
		dst = append(dst, `,"uidvalidity":`...)
		dst = strconv.AppendUint(dst, uint64(r.UIDValidity), 10)
	}
	return append(dst, '}')
}

func appendInfo(dst []byte, in *replica.Info) []byte {
	dst = append(dst, `{"replica_id":`...)
	dst = appendString(dst, in.ReplicaID)
	dst = append(dst, `,"index_id":`...)
	dst = appendString(dst, in.IndexID)
	if in.User != "" {
		dst = append(dst, `,"user":`...)
		dst = appendString(dst, in.User)
	}
	if in.Root != "" {
		dst = append(dst, `,"root":`...)
		dst = appendString(dst, in.Root)
	}
	return append(dst, '}')
}

func appendMailbox(dst []byte, m *model.Mailbox) []byte {
	dst = append(dst, `{"guid":`...)
	dst = appendGUID(dst, &m.GUID)
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, m.Name)
	dst = append(dst, `,"name_t":`...)
	dst = strconv.AppendInt(dst, m.NameT, 10)
	dst = append(dst, `,"uidvalidity":`...)
	dst = strconv.AppendUint(dst, uint64(m.UIDValidity), 10)
	dst = append(dst, `,"uidnext":`...)
	dst = strconv.AppendUint(dst, uint64(m.UIDNext), 10)
	dst = append(dst, `,"modseq":`...)
	dst = strconv.AppendUint(dst, m.Modseq, 10)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, m.Epoch, 10)
	if m.Deleted {
		dst = append(dst, `,"deleted":true`...)
	}
	if m.DeletedT != 0 {
		dst = append(dst, `,"deleted_t":`...)
		dst = strconv.AppendInt(dst, m.DeletedT, 10)
	}
	if m.Special != "" {
		dst = append(dst, `,"special":`...)
		dst = appendString(dst, m.Special)
	}
	dst = append(dst, `,"messages":`...)
	dst = strconv.AppendInt(dst, int64(m.Messages), 10)
	if m.Missing {
		dst = append(dst, `,"missing":true`...)
	}
	if !m.MergedInto.IsZero() {
		dst = append(dst, `,"merged_into":`...)
		dst = appendGUID(dst, &m.MergedInto)
	}
	return append(dst, '}')
}

func appendPairState(dst []byte, ps *replica.PairState) []byte {
	dst = append(dst, `{"peer_index_id":`...)
	dst = appendString(dst, ps.PeerIndexID)
	dst = append(dst, `,"sync_id":`...)
	dst = appendString(dst, ps.SyncID)
	dst = append(dst, `,"boxes":`...)
	if ps.Boxes == nil {
		dst = append(dst, "null"...)
		return append(dst, '}')
	}
	keys := sortedGUIDs(ps.Boxes)
	dst = append(dst, '{')
	for i := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		bs := ps.Boxes[keys[i]]
		dst = appendGUID(dst, &keys[i])
		dst = append(dst, `:{"base":`...)
		dst = strconv.AppendUint(dst, uint64(bs.Base), 10)
		dst = append(dst, `,"sent":`...)
		dst = strconv.AppendUint(dst, bs.Sent, 10)
		dst = append(dst, `,"epoch":`...)
		dst = strconv.AppendUint(dst, bs.Epoch, 10)
		dst = append(dst, `,"peer_epoch":`...)
		dst = strconv.AppendUint(dst, bs.PeerEpoch, 10)
		dst = append(dst, '}')
	}
	return append(dst, '}', '}')
}

// AppendApplyResult appends to dst exactly the bytes json.Marshal(r)
// gives (the epochs sorted by their hex GUIDs): the server writes one per
// sync, with an epoch per mailbox. r must not be nil.
func AppendApplyResult(dst []byte, r *replica.ApplyResult) []byte {
	dst = slices.Grow(dst, 160+64*len(r.Epochs))
	dst = append(dst, `{"added":`...)
	dst = strconv.AppendInt(dst, int64(r.Added), 10)
	dst = append(dst, `,"linked":`...)
	dst = strconv.AppendInt(dst, int64(r.Linked), 10)
	dst = append(dst, `,"fetched":`...)
	dst = strconv.AppendInt(dst, int64(r.Fetched), 10)
	dst = append(dst, `,"expunged":`...)
	dst = strconv.AppendInt(dst, int64(r.Expunged), 10)
	dst = append(dst, `,"flagged":`...)
	dst = strconv.AppendInt(dst, int64(r.Flagged), 10)
	dst = append(dst, `,"moved":`...)
	dst = strconv.AppendInt(dst, int64(r.Moved), 10)
	dst = append(dst, `,"bytes":`...)
	dst = strconv.AppendInt(dst, r.Bytes, 10)
	dst = append(dst, `,"mailbox_ops":`...)
	dst = strconv.AppendInt(dst, int64(r.MailboxOps), 10)
	if r.Changed {
		dst = append(dst, `,"changed":true`...)
	}
	if len(r.Skipped) > 0 {
		dst = append(dst, `,"skipped":[`...)
		for i, s := range r.Skipped {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, s)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"epochs":`...)
	if r.Epochs == nil {
		dst = append(dst, "null"...)
		return append(dst, '}')
	}
	keys := sortedGUIDs(r.Epochs)
	dst = append(dst, '{')
	for i := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendGUID(dst, &keys[i])
		dst = append(dst, ':')
		dst = strconv.AppendUint(dst, r.Epochs[keys[i]], 10)
	}
	return append(dst, '}', '}')
}

// sortedGUIDs returns m's keys in the order encoding/json writes a map's
// keys: by their text (the hex GUID, whose order is the GUIDs' byte order).
func sortedGUIDs[V any](m map[model.MailboxGUID]V) []model.MailboxGUID {
	keys := make([]model.MailboxGUID, 0, len(m))
	for g := range m {
		keys = append(keys, g)
	}
	slices.SortFunc(keys, func(a, b model.MailboxGUID) int {
		switch {
		case a.Less(b):
			return -1
		case b.Less(a):
			return 1
		}
		return 0
	})
	return keys
}

// AppendEmptyChunk appends the bytes json.Marshal writes for a changes
// chunk of mailbox g without records: {"guid":"<hex>"} (what EmptyChunk
// reads).
func AppendEmptyChunk(dst []byte, g *model.MailboxGUID) []byte {
	dst = append(dst, `{"guid":`...)
	dst = appendGUID(dst, g)
	return append(dst, '}')
}

// appendGUID appends a GUID as its MarshalText form, quoted.
func appendGUID(dst []byte, g *model.MailboxGUID) []byte {
	dst = append(dst, '"')
	dst = hex.AppendEncode(dst, g[:])
	return append(dst, '"')
}

// appendString appends s as a JSON string the way encoding/json writes it
// (HTML characters escaped, invalid UTF-8 replaced): plain ASCII directly,
// anything else by json.Marshal itself.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
