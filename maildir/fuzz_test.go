package maildir

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzz targets check properties, not just the absence of panics. Run one
// with: go test -run='^$' -fuzz=FuzzParseUidlist -fuzztime=45s ./maildir/
// Inputs worth keeping live in testdata/fuzz/<target>/.

func FuzzParseFileName(f *testing.F) {
	for _, s := range []string{
		"1491941793.M41850P8566V0000000000000015I0000000004F3030E_0.mx1.example.com,S=10956:2,STln",
		"1276528487.M364837P9451.kurkku,S=1355,W=1394:2,",
		"m:2,aZS9", "m:1,foo", "m:", "m,S=1x,S=2", "a:b:2,S", ".x", "m:2,S,X",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		fn, err := ParseFileName(name)
		if err != nil {
			if !errors.Is(err, ErrInvalidFileName) {
				t.Fatalf("error %v does not wrap ErrInvalidFileName", err)
			}
			return
		}
		if fn.Base == "" || strings.ContainsAny(fn.Base, "/:\x00") || fn.Base[0] == '.' {
			t.Fatalf("bad base %q", fn.Base)
		}
		s := fn.String()
		if !strings.HasPrefix(s, fn.Base) || len(s) > len(name) {
			t.Fatalf("String() = %q for %q", s, name)
		}
		again, err := ParseFileName(s)
		if err != nil || again != fn {
			t.Fatalf("ParseFileName(%q) = %+v, %v; want %+v", s, again, err, fn)
		}
		if fn.Size >= 0 && firstNumberAfter(fn.Base, ",S=") != fn.Size {
			t.Fatalf("size %d not in %q", fn.Size, fn.Base)
		}
		if fn.VSize >= 0 && firstNumberAfter(fn.Base, ",W=") != fn.VSize {
			t.Fatalf("vsize %d not in %q", fn.VSize, fn.Base)
		}
		// Changing flags keeps the identity and reads back (unless more
		// flags make the name too long for the file system).
		g := fn.WithFlags(fn.Flags^FlagSeen, fn.Keywords^1)
		if len(g.String()) > 255 {
			return
		}
		h, err := ParseFileName(g.String())
		if err != nil || h.Base != fn.Base || h.Flags != g.Flags || h.Keywords != g.Keywords {
			t.Fatalf("WithFlags: %q -> %+v, %v", g.String(), h, err)
		}
	})
}

// firstNumberAfter reads the digits after the first marker in s.
func firstNumberAfter(s, marker string) int64 {
	_, rest, ok := strings.Cut(s, marker)
	if !ok {
		return -2
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	n, err := strconv.ParseInt(rest[:end], 10, 64)
	if err != nil {
		return -2
	}
	return n
}

// normalizedUidlist is what Marshal followed by ParseUidlist gives back.
func normalizedUidlist(u *Uidlist) *Uidlist {
	n := *u
	n.Version = 3
	if u.Records != nil {
		n.Records = make([]UidRecord, len(u.Records))
		for i, r := range u.Records {
			r.FileName = r.Base()
			n.Records[i] = r
		}
	}
	return &n
}

func FuzzParseUidlist(f *testing.F) {
	for _, s := range []string{
		"3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n25017 W2481 :1276533073.M242911P3632.kurkku:2,S\n",
		"3 V1655390361 N1 Gbe88b9389940ab62f7580b00ce89bbd1\n1 :1655390418.M100238P743770V0000000000000030I00000000081274AE_0.cp.uhlhosting.ch,S=3734\n",
		"1 1275660208 25022\n25006 1276528487.M364837P9451.kurkku:2,S\n",
		"3 P%08Xv%08Xu N10 G3085F01B7F11094C501100008C4A11C1  V7 x\n5 :a\n",
		"3 V7 N10\n1  S12  xyz W5 G:odd O :name with  spaces \n2 :a:2,S\n3 W9 :a\n",
		"3 V7 N10\r\n1 :a\r\n2 :b\r\n3 W4 :c",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := ParseUidlist(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %#v is not a *ParseError with a line", err)
			}
			return
		}
		if u.UIDValidity == 0 || u.NextUID == 0 || (u.Version != 1 && u.Version != 3) {
			t.Fatalf("bad header %+v", u)
		}
		var prev uint32
		bases := make(map[string]bool)
		for _, r := range u.Records {
			if r.UID <= prev || r.UID == 1<<32-1 {
				t.Fatalf("UID %d after %d", r.UID, prev)
			}
			prev = r.UID
			if r.Base() == "" || strings.ContainsAny(r.FileName, "/\x00\r\n") || bases[r.Base()] {
				t.Fatalf("bad or repeated file name %q", r.FileName)
			}
			bases[r.Base()] = true
			for _, e := range r.Ext {
				if e.Key < 'A' || e.Key > 'Z' || strings.ContainsAny(e.Value, " \n") {
					t.Fatalf("bad ext %q", e)
				}
			}
		}
		if u.NextUID <= prev {
			t.Fatalf("NEXTUID %d not above UID %d", u.NextUID, prev)
		}
		m := u.Marshal()
		again, err := ParseUidlist(m)
		if err != nil {
			t.Fatalf("reparsing %q: %v", m, err)
		}
		if want := normalizedUidlist(u); !reflect.DeepEqual(again, want) {
			t.Fatalf("round trip of %q:\n%+v\nwant\n%+v", m, again, want)
		}
		if m2 := again.Marshal(); !bytes.Equal(m, m2) {
			t.Fatalf("Marshal not stable: %q then %q", m, m2)
		}
	})
}

func FuzzParseKeywords(f *testing.F) {
	for _, s := range []string{
		"0 $Junk\n1 NonJunk\n2 $Forwarded\n", "1 b\n4 e\n", "25 last\n26 beyond\n",
		"junk\n-1 minus\n+1 plus\n 1 lead\n1\n1 \n0 ok\n", "0 a\r\n01 b\r\n", "0 a\n1 b",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kw, err := ParseKeywords(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || bytes.IndexByte(data, 0) < 0 {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(kw) > MaxKeywords || (len(kw) > 0 && kw[len(kw)-1] == "") {
			t.Fatalf("bad result %q", kw)
		}
		// What Marshal can write reads back the same.
		var want []string
		for i, k := range kw {
			if validKeyword(k) {
				for len(want) < i {
					want = append(want, "")
				}
				want = append(want, k)
			}
		}
		got, err := ParseKeywords(MarshalKeywords(kw))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip: %q, %v; want %q", got, err, want)
		}
	})
}

func FuzzParseSubscriptions(f *testing.F) {
	for _, s := range []string{
		"V\t2\n\nINBOX\nArchive\t2024\nEntw&APw-rfe\nwith space\ta.b\n",
		"V\t2\n\na\x01xb\x01\nc\x01t\n\x011\n",
		"INBOX\nSent\nArchive.2024\nArchive.\n",
		"inbox\nINBOX\nSent\nSent\n", "\n.\n..\na..b\n.x\nok\n\xff\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, slash bool) {
		sep := byte('.')
		if slash {
			sep = '/'
		}
		names, err := ParseSubscriptionsSep(data, sep)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || bytes.IndexByte(data, 0) < 0 {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		seen := make(map[string]bool)
		for _, n := range names {
			if !validSubscription(n) || seen[n] || (IsInbox(n) && n != Inbox) {
				t.Fatalf("bad or repeated name %q in %q", n, names)
			}
			seen[n] = true
		}
		again, err := ParseSubscriptions(MarshalSubscriptions(names))
		if err != nil || len(again) != len(names) || (len(names) > 0 && !reflect.DeepEqual(again, names)) {
			t.Fatalf("round trip: %q, %v; want %q", again, err, names)
		}
	})
}

func FuzzParseMailboxLog(f *testing.F) {
	f.Add(append(logBytes(1, "3085f01b7f11094c501100008c4a11c1", 1600000000), logBytes(9, "", 0)[:10]...))
	f.Add(logBytes(4, "be88b9389940ab62f7580b00ce89bbd1", 1<<32-1))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := ParseMailboxLog(data)
		if err != nil || len(recs) != len(data)/24 {
			t.Fatalf("%d records, %v, from %d bytes", len(recs), err, len(data))
		}
		m := MarshalMailboxLog(recs)
		if len(m) != len(recs)*24 {
			t.Fatalf("Marshal wrote %d bytes", len(m))
		}
		for i := range recs {
			a, b := data[i*24:(i+1)*24], m[i*24:(i+1)*24]
			if a[0] != b[0] || !bytes.Equal(a[4:], b[4:]) {
				t.Fatalf("record %d: %x marshalled as %x", i, a, b)
			}
		}
		again, _ := ParseMailboxLog(m)
		if !reflect.DeepEqual(again, recs) {
			t.Fatalf("round trip %v, want %v", again, recs)
		}
	})
}

func FuzzMUTF7(f *testing.F) {
	for _, s := range []string{
		"", "INBOX", "&-", "Entw&APw-rfe", "~peter/mail/&U,BTFw-/&ZeVnLIqe-", "&2D3c5w-",
		"&AGE-", "&ZeVnLIqe-&ZeVnLIqe-", "&APx-", "&2D0-", "Entwürfe", "a&b", "\x01",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if dec, err := DecodeMUTF7(s); err == nil {
			if !utf8.ValidString(dec) || strings.ContainsRune(dec, 0) {
				t.Fatalf("DecodeMUTF7(%q) = %q: invalid UTF-8 or NUL", s, dec)
			}
			if enc := EncodeMUTF7(dec); enc != s {
				t.Fatalf("DecodeMUTF7(%q) = %q, which encodes to %q: not canonical", s, dec, enc)
			}
		} else if !errors.Is(err, ErrMUTF7) {
			t.Fatalf("DecodeMUTF7(%q) error %v does not wrap ErrMUTF7", s, err)
		}
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return
		}
		enc := EncodeMUTF7(s)
		for i := 0; i < len(enc); i++ {
			if enc[i] < 0x20 || enc[i] >= 0x7f {
				t.Fatalf("EncodeMUTF7(%q) = %q: not printable ASCII", s, enc)
			}
		}
		if dec, err := DecodeMUTF7(enc); err != nil || dec != s {
			t.Fatalf("DecodeMUTF7(EncodeMUTF7(%q) = %q) = %q, %v", s, enc, dec, err)
		}
	})
}

const fuzzRoot = "/srv/mail/user"

func fuzzLocation(fsLayout, utf8 bool) Location {
	l := Location{Root: fuzzRoot, UTF8: utf8}
	if fsLayout {
		l.Layout = LayoutFS
	}
	return l
}

// checkInRoot fails unless dir is the root (for INBOX only) or strictly
// inside it, clean, with every level a sane file name.
func checkInRoot(t *testing.T, dir string, inbox bool) {
	t.Helper()
	if dir != filepath.Clean(dir) {
		t.Fatalf("%q is not clean", dir)
	}
	if dir == fuzzRoot {
		if !inbox {
			t.Fatalf("a folder maps to the root")
		}
		return
	}
	if inbox || !strings.HasPrefix(dir, fuzzRoot+"/") {
		t.Fatalf("%q is outside %s", dir, fuzzRoot)
	}
	for _, p := range strings.Split(strings.TrimPrefix(dir, fuzzRoot+"/"), "/") {
		if p == "" || p == "." || p == ".." || len(p) > 255 || strings.ContainsRune(p, 0) {
			t.Fatalf("%q has a bad level %q", dir, p)
		}
	}
}

func FuzzMailboxDir(f *testing.F) {
	for _, s := range []string{
		"INBOX", "inbox", "Archive/2024", "Entwürfe", "A&B", "a//b", "../x", "a/./b", "cur", "a.b", ".x",
		"~peter/mail/台北/日本語", "a\x00b", "/a", "a/",
	} {
		f.Add(s, false, false)
		f.Add(s, true, false)
	}
	f.Add("Entwürfe", false, true)
	f.Fuzz(func(t *testing.T, name string, fsLayout, utf8 bool) {
		l := fuzzLocation(fsLayout, utf8)
		dir, err := l.MailboxDir(name)
		if err != nil {
			var ne *NameError
			if !errors.As(err, &ne) || ne.Name != name {
				t.Fatalf("MailboxDir(%q) error %v is not a *NameError naming it", name, err)
			}
			return
		}
		checkInRoot(t, dir, IsInbox(name))
		rel := ""
		if dir != fuzzRoot {
			rel = strings.TrimPrefix(dir, fuzzRoot+"/")
		}
		back, err := l.NameFromDir(rel)
		want := name
		if IsInbox(name) {
			want = Inbox
		}
		if err != nil || back != want {
			t.Fatalf("NameFromDir(%q) = %q, %v; want %q", rel, back, err, want)
		}
	})
}

func FuzzNameFromDir(f *testing.F) {
	for _, s := range []string{
		"", ".", ".Sent", ".Archive.2024", ".Entw&APw-rfe", ".INBOX", ".a..b", ".&AGE-", "a/b", "a//b",
		"../x", "a/../b", "cur", ".x", "Entw&APw-rfe/x", ".a/b", "..",
	} {
		f.Add(s, false, false)
		f.Add(s, true, false)
	}
	f.Add(".Entwürfe", false, true)
	f.Fuzz(func(t *testing.T, rel string, fsLayout, utf8 bool) {
		l := fuzzLocation(fsLayout, utf8)
		name, err := l.NameFromDir(rel)
		if err != nil {
			var ne *NameError
			if !errors.As(err, &ne) {
				t.Fatalf("NameFromDir(%q) error %v is not a *NameError", rel, err)
			}
			return
		}
		dir, err := l.MailboxDir(name)
		if err != nil {
			t.Fatalf("MailboxDir(NameFromDir(%q) = %q): %v", rel, name, err)
		}
		if dir != filepath.Join(fuzzRoot, rel) {
			t.Fatalf("NameFromDir(%q) = %q, whose directory is %q", rel, name, dir)
		}
		checkInRoot(t, dir, name == Inbox)
	})
}

func FuzzParseDoveconfSpecialUse(f *testing.F) {
	f.Add("namespace inbox {\n  separator = .\n  prefix = INBOX.\n  mailbox INBOX.Trash {\n    special_use = \\Trash\n  }\n}\nmailbox \"A b\" {\n special_use = \"\\Junk \\Sent\"\n}\n")
	f.Add("}\n{\nmailbox {\n}\n")
	f.Fuzz(func(t *testing.T, out string) {
		for name, flags := range ParseDoveconfSpecialUse([]byte(out)) {
			if name == "" || len(flags) == 0 {
				t.Fatalf("entry %q: %q", name, flags)
			}
			for _, fl := range flags {
				if fl == "" || strings.ContainsAny(fl, " \t") {
					t.Fatalf("mailbox %q: flag %q", name, fl)
				}
			}
		}
	})
}
