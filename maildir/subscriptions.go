package maildir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// SubscriptionsName is the file name of the subscriptions list in the root.
const SubscriptionsName = "subscriptions"

const subsV2Header = "V\t2\n\n"

// ParseSubscriptions parses a subscriptions file whose version 1 entries use
// Maildir++'s "." separator; see ParseSubscriptionsSep.
func ParseSubscriptions(data []byte) ([]string, error) {
	return ParseSubscriptionsSep(data, '.')
}

// ParseSubscriptionsSep parses a subscriptions file and returns the names
// with "/" as hierarchy separator, as stored (Dovecot stores storage names:
// modified UTF-7 unless the location has UTF8; Location.ReadSubscriptions
// decodes them).
//
// Version 2 starts with "V\t2\n\n"; each line is one name whose hierarchy
// levels are separated by TAB, each level tab-escaped (\001 followed by
// '0', '1', 't', 'r' or 'n' stands for NUL, \001, TAB, CR, LF); Dovecot
// 2.3 writes it for a new file. Without that header (version 1, from older
// versions, and kept as such by Dovecot when it rewrites the file), each
// line is a name with sep between the levels.
//
// Like Dovecot's reader: a last line without "\n" counts, a "\r" before "\n"
// is dropped, one trailing separator is removed, "inbox" in any case is
// "INBOX", and entries that are not valid names (empty, empty levels, "." or
// "..", control characters, invalid UTF-8) are skipped (Dovecot removes
// them). Repeated names are returned once. The only error is a NUL byte in
// the data.
func ParseSubscriptionsSep(data []byte, sep byte) ([]string, error) {
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, &ParseError{File: SubscriptionsName, Reason: "contains a NUL byte"}
	}
	v2 := bytes.HasPrefix(data, []byte(subsV2Header))
	if v2 {
		data = data[len(subsV2Header):]
	}
	var names []string
	seen := make(map[string]bool)
	for _, line := range splitLines(data, true) {
		var name string
		if v2 {
			parts := strings.Split(line, "\t")
			for i, p := range parts {
				parts[i] = tabUnescape(p)
			}
			name = strings.Join(parts, "/")
		} else {
			name = line
			if sep != '/' {
				name = strings.ReplaceAll(name, string(sep), "/")
			}
		}
		name = strings.TrimSuffix(name, "/")
		if IsInbox(name) {
			name = Inbox
		}
		if !validSubscription(name) || seen[name] {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	return names, nil
}

func validSubscription(name string) bool {
	if name == "" || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return false
		}
	}
	for _, p := range strings.Split(name, "/") {
		if p == "" || p == "." || p == ".." {
			return false
		}
	}
	return true
}

// tabUnescape undoes Dovecot's tab-escaping leniently, as Dovecot does: an
// unknown escape stands for the character after \001, a trailing \001 is
// dropped.
func tabUnescape(s string) string {
	if strings.IndexByte(s, 1) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != 1 {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		switch s[i] {
		case '0':
			b.WriteByte(0)
		case '1':
			b.WriteByte(1)
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func tabEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0:
			b.WriteString("\x010")
		case 1:
			b.WriteString("\x011")
		case '\t':
			b.WriteString("\x01t")
		case '\r':
			b.WriteString("\x01r")
		case '\n':
			b.WriteString("\x01n")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// MarshalSubscriptions writes a version 2 subscriptions file: the header,
// then one line per name ("/" separated, as ParseSubscriptions returns them)
// with TAB between the tab-escaped levels. Invalid and repeated names are
// left out; WriteSubscriptions refuses invalid ones instead.
func MarshalSubscriptions(names []string) []byte {
	var b bytes.Buffer
	b.WriteString(subsV2Header)
	seen := make(map[string]bool)
	for _, name := range names {
		if IsInbox(name) {
			name = Inbox
		}
		if !validSubscription(name) || seen[name] {
			continue
		}
		seen[name] = true
		parts := strings.Split(name, "/")
		for i, p := range parts {
			if i > 0 {
				b.WriteByte('\t')
			}
			b.WriteString(tabEscape(p))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ReadSubscriptions reads root/subscriptions with Maildir++'s separator for
// version 1 files (see ParseSubscriptionsSep; Location.ReadSubscriptions
// uses the location's separator and decodes names). A missing file is no
// error: nil, nil, nil.
func ReadSubscriptions(root string) ([]string, os.FileInfo, error) {
	return readSubscriptions(root, '.')
}

func readSubscriptions(root string, sep byte) ([]string, os.FileInfo, error) {
	path := filepath.Join(root, SubscriptionsName)
	data, fi, err := readFileInfo(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	names, err := ParseSubscriptionsSep(data, sep)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return names, fi, nil
}

// WriteSubscriptions replaces root/subscriptions atomically with a version 2
// file listing names (as stored: modified UTF-7 unless UTF8; see
// Location.WriteSubscriptions), with an mtime in a later second than the old
// file's (Dovecot compares whole seconds). Invalid names are an error. The
// caller should hold LockSubscriptions while it reads, merges and writes, or
// a SUBSCRIBE that Dovecot handles meanwhile can be lost.
func WriteSubscriptions(root string, names []string) error {
	path := filepath.Join(root, SubscriptionsName)
	for _, n := range names {
		if !IsInbox(n) && !validSubscription(n) {
			return fmt.Errorf("writing %s: invalid mailbox name %q", path, n)
		}
	}
	return writeIndexFile(path, MarshalSubscriptions(names))
}

// ReadSubscriptions reads the subscriptions of this location and returns
// mailbox names (UTF-8, "/" separated): version 1 entries are split at the
// layout's separator and, unless UTF8, levels are decoded from modified
// UTF-7. Entries that do not decode are skipped, as Dovecot skips them.
func (l Location) ReadSubscriptions() ([]string, os.FileInfo, error) {
	stored, fi, err := readSubscriptions(l.Root, l.Separator())
	if err != nil || l.UTF8 {
		return stored, fi, err
	}
	names := make([]string, 0, len(stored))
	seen := make(map[string]bool)
	for _, s := range stored {
		parts := strings.Split(s, "/")
		ok := true
		for i, p := range parts {
			if parts[i], err = DecodeMUTF7(p); err != nil {
				ok = false
				break
			}
		}
		name := strings.Join(parts, "/")
		if IsInbox(name) {
			name = Inbox
		}
		if ok && validSubscription(name) && !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return names, fi, nil
}

// WriteSubscriptions writes the subscriptions of this location from mailbox
// names (UTF-8, "/" separated), encoding each level to modified UTF-7 unless
// UTF8. See the package-level WriteSubscriptions.
func (l Location) WriteSubscriptions(names []string) error {
	if l.UTF8 {
		return WriteSubscriptions(l.Root, names)
	}
	stored := make([]string, len(names))
	for i, n := range names {
		if !IsInbox(n) && !validSubscription(n) {
			return fmt.Errorf("writing %s: invalid mailbox name %q", filepath.Join(l.Root, SubscriptionsName), n)
		}
		parts := strings.Split(n, "/")
		for j, p := range parts {
			parts[j] = EncodeMUTF7(p)
		}
		stored[i] = strings.Join(parts, "/")
	}
	return WriteSubscriptions(l.Root, stored)
}

// LockSubscriptions takes Dovecot's dotlock on root/subscriptions
// ("subscriptions.lock"; Dovecot treats it as stale after 30 s without a
// change). See LockUidlist for the rules.
func LockSubscriptions(ctx context.Context, root string, timeout time.Duration) (*Dotlock, error) {
	return lockFile(ctx, filepath.Join(root, SubscriptionsName), SubscriptionsLockStale, timeout, false)
}

// LockSubscriptionsOrphans is LockSubscriptions for a caller that holds its
// replica's own lock (see LockUidlistOrphans): a twinbox subscriptions.lock
// this process does not hold was left by a killed twinbox and is removed
// at once, not after 30 s (meanwhile Dovecot's SUBSCRIBE, UNSUBSCRIBE and
// DELETE wait for it too).
func LockSubscriptionsOrphans(ctx context.Context, root string, timeout time.Duration) (*Dotlock, error) {
	return lockFile(ctx, filepath.Join(root, SubscriptionsName), SubscriptionsLockStale, timeout, true)
}

// BreakOrphanSubscriptionsLock removes root's subscriptions.lock if it is a
// twinbox lock this process does not hold (left by a killed twinbox); the
// caller holds its replica's own lock. It reports whether it did.
func BreakOrphanSubscriptionsLock(root string) bool {
	return breakOrphan(filepath.Join(root, SubscriptionsName) + ".lock")
}
