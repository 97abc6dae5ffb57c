package jsonfast

import (
	"bytes"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// BeginReply decodes a begin reply (the wire client reads one per sync;
// its mailbox list and saved state grow with the mailboxes). On false the
// caller decodes a fresh value with json.Unmarshal.
func BeginReply(v []byte, r *replica.BeginReply) bool {
	p := New(v)
	// An array given twice: json.Unmarshal would decode the second into
	// the first's elements; the long way decides.
	var seen [3]bool
	once := func(i int) bool {
		if seen[i] {
			return false
		}
		seen[i] = true
		return true
	}
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "info":
			return p.info(&r.Info)
		case "mailboxes":
			if !once(0) {
				return false
			}
			if p.Null() { // (as json.Marshal writes a nil slice)
				r.Mailboxes = nil
				return true
			}
			// ([] is an empty slice, not nil.) Room for the mailboxes the
			// reply seems to hold, so that the list does not regrow: a
			// guess (a name may hold the text too), bounded so that a
			// hostile reply cannot ask for much more than it is long.
			r.Mailboxes = make([]model.Mailbox, 0, min(bytes.Count(v, []byte(`{"guid":`)), 4096))
			return p.Array(func() bool {
				var m model.Mailbox
				ok := p.Object(func(key []byte) bool {
					known, ok := p.MailboxField(key, &m)
					return known && ok
				})
				r.Mailboxes = append(r.Mailboxes, m)
				return ok
			})
		case "subs":
			if !once(1) {
				return false
			}
			if p.Null() { // (as json.Marshal writes a nil slice)
				r.Subs = nil
				return true
			}
			r.Subs = []model.Subscription{}
			return p.Array(func() bool {
				var s model.Subscription
				ok := p.Object(func(key []byte) bool {
					switch string(key) {
					case "name":
						return p.StrTo(&s.Name)
					case "sub":
						return p.BoolTo(&s.Subscribed)
					case "t":
						return p.Int64To(&s.T)
					}
					return false
				})
				r.Subs = append(r.Subs, s)
				return ok
			})
		case "pair":
			if p.Null() {
				r.Pair = nil
				return true
			}
			if r.Pair == nil {
				r.Pair = &replica.PairState{}
			}
			return p.PairState(r.Pair)
		case "held":
			if !once(2) {
				return false
			}
			if p.Null() { // (as json.Marshal writes a nil slice)
				r.Held = nil
				return true
			}
			r.Held = []replica.HeldInfo{}
			return p.Array(func() bool {
				var h replica.HeldInfo
				ok := p.Object(func(key []byte) bool {
					switch string(key) {
					case "mailbox":
						return p.StrTo(&h.Mailbox)
					case "count":
						return p.IntTo(&h.Count)
					}
					return false
				})
				r.Held = append(r.Held, h)
				return ok
			})
		case "uidvalidity":
			return p.Uint32To(&r.UIDValidity)
		}
		return false
	}) && p.End()
}

func (p *Parser) info(in *replica.Info) bool {
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "replica_id":
			return p.StrTo(&in.ReplicaID)
		case "index_id":
			return p.StrTo(&in.IndexID)
		case "user":
			return p.StrTo(&in.User)
		case "root":
			return p.StrTo(&in.Root)
		}
		return false
	})
}

// ApplyResult decodes an apply reply (its epochs, one per mailbox). On
// false the caller decodes a fresh value with json.Unmarshal.
func ApplyResult(v []byte, r *replica.ApplyResult) bool {
	p := New(v)
	skipped := false
	return p.Object(func(key []byte) bool {
		switch string(key) {
		case "added":
			return p.IntTo(&r.Added)
		case "linked":
			return p.IntTo(&r.Linked)
		case "fetched":
			return p.IntTo(&r.Fetched)
		case "expunged":
			return p.IntTo(&r.Expunged)
		case "flagged":
			return p.IntTo(&r.Flagged)
		case "moved":
			return p.IntTo(&r.Moved)
		case "bytes":
			return p.Int64To(&r.Bytes)
		case "mailbox_ops":
			return p.IntTo(&r.MailboxOps)
		case "changed":
			return p.BoolTo(&r.Changed)
		case "skipped":
			if skipped { // (as for the arrays of a begin reply)
				return false
			}
			skipped = true
			if p.Null() {
				r.Skipped = nil
				return true
			}
			return p.Strings(&r.Skipped)
		case "epochs":
			if p.Null() {
				r.Epochs = nil
				return true
			}
			if r.Epochs == nil {
				r.Epochs = map[model.MailboxGUID]uint64{}
			}
			return p.Object(func(key []byte) bool {
				var g model.MailboxGUID
				var e uint64
				if !guid(key, &g) || !p.Uint64To(&e) {
					return false
				}
				r.Epochs[g] = e
				return true
			})
		}
		return false
	}) && p.End()
}

// EmptyChunk decodes a changes chunk that carries no records, as
// json.Marshal writes one ({"guid":"..."}: a no-change sync gets one per
// mailbox), into its GUID. Anything else reports false.
func EmptyChunk(v []byte, g *model.MailboxGUID) bool {
	p := New(v)
	seen := false
	return p.Object(func(key []byte) bool {
		if seen || string(key) != "guid" {
			return false
		}
		seen = true
		return p.GUIDTo(g)
	}) && seen && p.End()
}
