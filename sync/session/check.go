package session

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/merge"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// Check scans both replicas and lists every difference a client could see:
// mailbox names, GUIDs, UIDVALIDITY, UIDNEXT, UID -> message GUID, flags
// and keywords, held expunges and subscriptions. No output means identical.
func Check(ctx context.Context, a, b replica.Replica, opt Options) ([]string, error) {
	var begins [2]*replica.BeginReply
	var contents [2]map[model.MailboxGUID]*merge.Contents
	filter := newFilter(opt.Include, opt.Exclude)
	for i, r := range []replica.Replica{a, b} {
		br, err := r.Begin(ctx, replica.BeginRequest{})
		if err != nil {
			return nil, err
		}
		begins[i] = br
		var req replica.ChangesRequest
		for _, m := range br.Mailboxes {
			if !m.Deleted && filter(m.Name) {
				req.Boxes = append(req.Boxes, replica.BoxSince{GUID: m.GUID})
			}
		}
		if contents[i], err = r.Changes(ctx, req); err != nil {
			return nil, err
		}
	}
	var diffs []string
	d := func(f string, args ...any) { diffs = append(diffs, fmt.Sprintf(f, args...)) }
	type boxView struct {
		m    model.Mailbox
		msgs map[uint32]model.Message
	}
	views := [2]map[string]*boxView{{}, {}}
	for i := range begins {
		for _, m := range begins[i].Mailboxes {
			if m.Deleted || !filter(m.Name) {
				continue
			}
			bv := &boxView{m: m, msgs: map[uint32]model.Message{}}
			if c := contents[i][m.GUID]; c != nil {
				for _, msg := range c.Messages {
					bv.msgs[msg.UID] = msg
				}
			}
			views[i][model.NormName(m.Name)] = bv
		}
	}
	names := map[string]bool{}
	for i := range views {
		for n := range views[i] {
			names[n] = true
		}
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		va, vb := views[0][n], views[1][n]
		switch {
		case va == nil:
			d("mailbox %q: only in B", n)
			continue
		case vb == nil:
			d("mailbox %q: only in A", n)
			continue
		}
		if va.m.GUID != vb.m.GUID {
			d("mailbox %q: GUID A=%s B=%s", n, va.m.GUID, vb.m.GUID)
		}
		if va.m.UIDValidity != vb.m.UIDValidity {
			d("mailbox %q: UIDVALIDITY A=%d B=%d", n, va.m.UIDValidity, vb.m.UIDValidity)
		}
		if va.m.UIDNext != vb.m.UIDNext {
			d("mailbox %q: UIDNEXT A=%d B=%d", n, va.m.UIDNext, vb.m.UIDNext)
		}
		uids := map[uint32]bool{}
		for u := range va.msgs {
			uids[u] = true
		}
		for u := range vb.msgs {
			uids[u] = true
		}
		var us []uint32
		for u := range uids {
			us = append(us, u)
		}
		sort.Slice(us, func(i, j int) bool { return us[i] < us[j] })
		for _, u := range us {
			ma, oka := va.msgs[u]
			mb, okb := vb.msgs[u]
			switch {
			case !oka:
				d("mailbox %q UID %d: only in B (%s)", n, u, mb.GUID)
			case !okb:
				d("mailbox %q UID %d: only in A (%s)", n, u, ma.GUID)
			case ma.GUID != mb.GUID:
				d("mailbox %q UID %d: message A=%s B=%s", n, u, ma.GUID, mb.GUID)
			default:
				if fa, fb := strings.Join(ma.Flags.SetNames(), " "), strings.Join(mb.Flags.SetNames(), " "); fa != fb {
					d("mailbox %q UID %d: flags A=[%s] B=[%s]", n, u, fa, fb)
				}
				if ma.Held != mb.Held {
					d("mailbox %q UID %d: expunge held back on one side", n, u)
				}
				if ma.Size != mb.Size || ma.Mtime/1e9 != mb.Mtime/1e9 {
					d("mailbox %q UID %d: size/date A=%d/%d B=%d/%d", n, u, ma.Size, ma.Mtime/1e9, mb.Size, mb.Mtime/1e9)
				}
			}
		}
	}
	subs := [2]map[string]bool{{}, {}}
	for i := range begins {
		for _, s := range begins[i].Subs {
			if s.Subscribed {
				subs[i][s.Name] = true
			}
		}
	}
	for n := range subs[0] {
		if !subs[1][n] {
			d("subscription %q: only in A", n)
		}
	}
	for n := range subs[1] {
		if !subs[0][n] {
			d("subscription %q: only in B", n)
		}
	}
	sort.Strings(diffs[len(diffs)-countSubs(diffs):])
	return diffs, nil
}

func countSubs(d []string) int {
	n := 0
	for i := len(d) - 1; i >= 0 && strings.HasPrefix(d[i], "subscription "); i-- {
		n++
	}
	return n
}
