package dovecot

import (
	"fmt"
	"sort"
	"strings"
)

// View is what Dovecot sees in one Maildir root.
type View struct {
	Root          string
	Mailboxes     []Mailbox // sorted by Name
	Subscriptions []string  // sorted; may name mailboxes that do not exist
	// Warnings holds every Warning/Error/Panic/Fatal line doveadm printed on stderr or
	// wrote to its log while reading, every line matching BadLogPatterns, a note for
	// each non-zero doveadm exit, and the judge's own consistency notes.
	Warnings []string
}

// Mailbox is one mailbox as Dovecot lists it. Names use "/" as the hierarchy separator
// in both layouts and are UTF-8 (decoded from modified UTF-7 unless the UTF8 option).
type Mailbox struct {
	Name string
	// NoSelect is set for names that doveadm lists but cannot open (a Maildir++ parent
	// like "a" of ".a.b" that has no directory of its own); they have no status.
	NoSelect    bool
	GUID        string // 32 hex digits
	UIDValidity uint32
	UIDNext     uint32
	Count       int       // messages, per doveadm mailbox status
	Messages    []Message // sorted by UID
}

// Message is one message as Dovecot sees it.
type Message struct {
	UID  uint32
	GUID string // the G field of its uidlist record, or its base name
	// Flags holds the system flags (\Answered \Deleted \Draft \Flagged \Seen) and the
	// keywords by name, sorted; \Recent is left out.
	Flags      []string
	Received   int64  // INTERNALDATE as a Unix time: the file's mtime
	Size       int64  // physical size, in bytes
	BodySHA256 string // SHA-256 of the whole message (header and body) as Dovecot reads it
}

// SystemFlags returns the flags that start with a backslash.
func (m Message) SystemFlags() []string {
	var out []string
	for _, f := range m.Flags {
		if strings.HasPrefix(f, `\`) {
			out = append(out, f)
		}
	}
	return out
}

// Keywords returns the flags that are keywords.
func (m Message) Keywords() []string {
	var out []string
	for _, f := range m.Flags {
		if !strings.HasPrefix(f, `\`) {
			out = append(out, f)
		}
	}
	return out
}

// Mailbox returns the mailbox with the given name, or nil.
func (v *View) Mailbox(name string) *Mailbox {
	for i := range v.Mailboxes {
		if v.Mailboxes[i].Name == name {
			return &v.Mailboxes[i]
		}
	}
	return nil
}

// Message returns the message with the given UID, or nil.
func (mb *Mailbox) Message(uid uint32) *Message {
	for i := range mb.Messages {
		if mb.Messages[i].UID == uid {
			return &mb.Messages[i]
		}
	}
	return nil
}

// BadLogPatterns are substrings (matched case-insensitively) of Dovecot log lines that
// mean a Maildir was written wrongly, whatever the log level.
var BadLogPatterns = []string{
	"Fixed a duplicate",
	"Expunged message reappeared",
	"dotlock",
	"overridden",
	"lost",
	"Broken",
	"Corrupted",
	"UIDVALIDITY changed",
	"Duplicate file entry",
}

// MatchBadPattern returns the BadLogPatterns entry line matches, or "".
func MatchBadPattern(line string) string { return matchBadPattern(line) }

func matchBadPattern(line string) string {
	l := strings.ToLower(line)
	for _, p := range BadLogPatterns {
		if strings.Contains(l, strings.ToLower(p)) {
			return p
		}
	}
	return ""
}

// Check returns the problems within one view: every warning (marked with the
// BadLogPatterns entry it matches), message GUIDs that occur twice in one mailbox,
// mailbox GUIDs that occur twice, and mailboxes whose message count from status differs
// from the messages fetched. Empty means Dovecot is happy with the root.
func (v *View) Check() []string {
	var out []string
	for _, w := range v.Warnings {
		if p := matchBadPattern(w); p != "" {
			out = append(out, fmt.Sprintf("dovecot warning [%s]: %s", p, w))
		} else {
			out = append(out, "dovecot warning: "+w)
		}
	}
	boxGUIDs := map[string]string{}
	for _, mb := range v.Mailboxes {
		if mb.NoSelect {
			continue
		}
		if other, ok := boxGUIDs[mb.GUID]; ok {
			out = append(out, fmt.Sprintf("mailboxes %q and %q have the same GUID %s", other, mb.Name, mb.GUID))
		} else {
			boxGUIDs[mb.GUID] = mb.Name
		}
		if mb.Count != len(mb.Messages) {
			out = append(out, fmt.Sprintf("mailbox %q: status counts %d messages, fetch returned %d", mb.Name, mb.Count, len(mb.Messages)))
		}
		seen := map[string]uint32{}
		for _, m := range mb.Messages {
			if uid, ok := seen[m.GUID]; ok {
				out = append(out, fmt.Sprintf("mailbox %q: UIDs %d and %d have the same GUID %s", mb.Name, uid, m.UID, m.GUID))
			} else {
				seen[m.GUID] = m.UID
			}
		}
	}
	return out
}

// Diff returns human-readable differences between two views (a and b), one per line,
// in a stable order; empty means Dovecot sees the same mail in both. It compares mailbox
// names, GUIDs, UIDVALIDITY, UIDNEXT, selectability, and per UID the message GUID,
// system flags, keywords, INTERNALDATE and body hash, and the subscriptions. Warnings
// are not compared: use Check on each view.
func Diff(a, b *View) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	names := map[string]bool{}
	for _, mb := range a.Mailboxes {
		names[mb.Name] = true
	}
	for _, mb := range b.Mailboxes {
		names[mb.Name] = true
	}
	for _, name := range sortedKeys(names) {
		ma, mb := a.Mailbox(name), b.Mailbox(name)
		switch {
		case mb == nil:
			add("mailbox %q: only in a (GUID %s, %d messages)", name, ma.GUID, len(ma.Messages))
			continue
		case ma == nil:
			add("mailbox %q: only in b (GUID %s, %d messages)", name, mb.GUID, len(mb.Messages))
			continue
		}
		if ma.NoSelect != mb.NoSelect {
			add("mailbox %q: selectable a=%v b=%v", name, !ma.NoSelect, !mb.NoSelect)
		}
		if ma.GUID != mb.GUID {
			add("mailbox %q: GUID a=%s b=%s", name, ma.GUID, mb.GUID)
		}
		if ma.UIDValidity != mb.UIDValidity {
			add("mailbox %q: UIDVALIDITY a=%d b=%d", name, ma.UIDValidity, mb.UIDValidity)
		}
		if ma.UIDNext != mb.UIDNext {
			add("mailbox %q: UIDNEXT a=%d b=%d", name, ma.UIDNext, mb.UIDNext)
		}
		out = append(out, diffMessages(name, ma.Messages, mb.Messages)...)
	}

	subs := map[string]int{}
	for _, s := range a.Subscriptions {
		subs[s] |= 1
	}
	for _, s := range b.Subscriptions {
		subs[s] |= 2
	}
	for _, s := range sortedKeys(subs) {
		switch subs[s] {
		case 1:
			add("subscription %q: only in a", s)
		case 2:
			add("subscription %q: only in b", s)
		}
	}
	return out
}

func diffMessages(box string, as, bs []Message) []string {
	var out []string
	add := func(uid uint32, format string, args ...any) {
		out = append(out, fmt.Sprintf("mailbox %q uid %d: ", box, uid)+fmt.Sprintf(format, args...))
	}
	// Messages are sorted by UID; a UID twice in one view (cannot happen in Dovecot) is
	// compared in order.
	i, j := 0, 0
	for i < len(as) || j < len(bs) {
		switch {
		case j >= len(bs) || i < len(as) && as[i].UID < bs[j].UID:
			add(as[i].UID, "only in a (GUID %s)", as[i].GUID)
			i++
			continue
		case i >= len(as) || bs[j].UID < as[i].UID:
			add(bs[j].UID, "only in b (GUID %s)", bs[j].GUID)
			j++
			continue
		}
		x, y := as[i], bs[j]
		i++
		j++
		if x.GUID != y.GUID {
			add(x.UID, "GUID a=%s b=%s", x.GUID, y.GUID)
		}
		if fa, fb := x.SystemFlags(), y.SystemFlags(); !equalStrings(fa, fb) {
			add(x.UID, "flags a=%s b=%s", fmtList(fa), fmtList(fb))
		}
		if ka, kb := x.Keywords(), y.Keywords(); !equalStrings(ka, kb) {
			add(x.UID, "keywords a=%s b=%s", fmtList(ka), fmtList(kb))
		}
		if x.Received != y.Received {
			add(x.UID, "INTERNALDATE a=%d b=%d", x.Received, y.Received)
		}
		if x.BodySHA256 != y.BodySHA256 || x.Size != y.Size {
			add(x.UID, "body a=%s (%d bytes) b=%s (%d bytes)", short(x.BodySHA256), x.Size, short(y.BodySHA256), y.Size)
		}
	}
	return out
}

func short(h string) string {
	if h == "" {
		return "(no hash)"
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func fmtList(l []string) string { return "[" + strings.Join(l, " ") + "]" }

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
