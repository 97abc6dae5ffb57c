package maildir

import (
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
)

// nameFromDirRef is NameFromDir as it was before its fast path: the full
// MailboxDir round trip for every directory. The fast path must give the
// same name, or the same error, for every input.
func nameFromDirRef(l Location, rel string) (string, error) {
	if rel == "" || rel == "." {
		return Inbox, nil
	}
	bad := func(reason string) (string, error) { return "", &NameError{Name: rel, Reason: reason} }
	var enc []string
	switch l.Layout {
	case LayoutMaildirPP:
		if !strings.HasPrefix(rel, ".") || strings.ContainsRune(rel, '/') {
			return bad("not a Maildir++ folder directory (\".Name\")")
		}
		enc = strings.Split(rel[1:], ".")
	case LayoutFS:
		enc = strings.Split(rel, "/")
	default:
		return bad("unknown layout")
	}
	parts := make([]string, len(enc))
	for i, e := range enc {
		if l.UTF8 {
			parts[i] = e
			continue
		}
		p, err := DecodeMUTF7(e)
		if err != nil {
			return bad(err.Error())
		}
		parts[i] = p
	}
	name := strings.Join(parts, "/")
	dir, err := l.MailboxDir(name)
	if err != nil {
		var ne *NameError
		if errors.As(err, &ne) {
			return bad(ne.Reason)
		}
		return "", err
	}
	if dir != filepath.Join(l.Root, rel) {
		return bad(fmt.Sprintf("not the directory of mailbox %q", name))
	}
	return name, nil
}

func sameNameFromDir(t *testing.T, l Location, rel string) bool {
	t.Helper()
	got, gerr := l.NameFromDir(rel)
	want, werr := nameFromDirRef(l, rel)
	if got != want || fmt.Sprint(gerr) != fmt.Sprint(werr) || fmt.Sprintf("%T", gerr) != fmt.Sprintf("%T", werr) {
		t.Fatalf("%+v NameFromDir(%q) = %q, %v; the full round trip gives %q, %v", l, rel, got, gerr, want, werr)
	}
	return gerr == nil
}

// TestNameFromDirFastPathMatchesRoundTrip checks NameFromDir against the
// full round trip on names that pass and names that must not (hostile
// directory names a peer or a user could create), in both layouts, with
// and without UTF-8 names, under several roots. It fails if the fast path
// accepts a directory the round trip refuses (or the reverse).
func TestNameFromDirFastPathMatchesRoundTrip(t *testing.T) {
	fixed := []string{
		"", ".", "..", "...", ".Sent", ".Archive.2024", ".Entw&APw-rfe", ".INBOX", ".inbox", ".Inbox.x",
		".a..b", ".a.", ".&AGE-", ".&AC4-", ".&AC8-", ".&-", ".&", ".a&b", ".a&-b", ".&AGEAYQ-", ".&AGE-&AGE-",
		"a/b", "a//b", "a/", "/a", "../x", "a/../b", "a/./b", "./a", "cur", "new", "tmp", "a/cur", ".x",
		"Entw&APw-rfe/x", ".a/b", ".Entwürfe", "Entwürfe/a", "..x", ".\x01", "a\x7fb", "\xff", ".\xff",
		"." + strings.Repeat("a", 254), "." + strings.Repeat("a", 255), strings.Repeat("a", 256),
		".a b", ".a,b", ".a+b", "a b/c", ".a~b", ".&ZeVnLIqe-", ".&ZeVnLIqe",
	}
	atoms := []string{".", "/", "a", "B", "&", "-", "AGE", "AC4", "AC8", "APw", ",", "+", "INBOX", "inbox",
		"cur", "tmp", "é", "\x01", " ", "..", "x"}
	roots := []string{"/srv/mail/u", "/srv/mail/u/", "/", "rel/root", "/srv/x/../mail", "."}
	rng := rand.New(rand.NewSource(7))
	accepted := 0
	for _, root := range roots {
		for _, layout := range []Layout{LayoutMaildirPP, LayoutFS} {
			for _, utf := range []bool{false, true} {
				l := Location{Root: root, Layout: layout, UTF8: utf}
				for _, rel := range fixed {
					if sameNameFromDir(t, l, rel) {
						accepted++
					}
				}
				for i := 0; i < 3000; i++ {
					var b strings.Builder
					if layout == LayoutMaildirPP && rng.Intn(8) != 0 {
						b.WriteString(".")
					}
					for n := 1 + rng.Intn(6); n > 0; n-- {
						b.WriteString(atoms[rng.Intn(len(atoms))])
					}
					if sameNameFromDir(t, l, b.String()) {
						accepted++
					}
				}
			}
		}
	}
	// The round trip without a root fails for every name but INBOX's.
	for _, rel := range fixed {
		sameNameFromDir(t, Location{Layout: LayoutMaildirPP}, rel)
		sameNameFromDir(t, Location{Layout: LayoutFS}, rel)
	}
	if accepted < 1000 {
		t.Fatalf("only %d accepted directories: the comparison hardly checks the fast path", accepted)
	}
}
