package maildir

import (
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func guid(t *testing.T, s string) [16]byte {
	t.Helper()
	var g [16]byte
	if _, err := hex.Decode(g[:], []byte(s)); err != nil || len(s) != 32 {
		t.Fatalf("bad GUID %q", s)
	}
	return g
}

func TestParseUidlist(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Uidlist
	}{
		{
			// Header from Dovecot's Maildir documentation; the records in the
			// style it describes (older Dovecot kept the flags).
			name: "dovecot docs",
			in: "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n" +
				"25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n" +
				"25017 W2481 :1276533073.M242911P3632.kurkku,S=2444:2,S\n",
			want: &Uidlist{
				Version: 3, UIDValidity: 1275660208, NextUID: 25022,
				GUID: guid(t, "3085f01b7f11094c501100008c4a11c1"),
				Records: []UidRecord{
					{UID: 25006, FileName: "1276528487.M364837P9451.kurkku,S=1355,W=1394:2,"},
					{UID: 25017, Ext: []Ext{{'W', "2481"}}, FileName: "1276533073.M242911P3632.kurkku,S=2444:2,S"},
				},
			},
		},
		{
			// A real file where the header's N was not above the records':
			// Dovecot raises NEXTUID to the last UID + 1.
			name: "N below records",
			in: "3 V1655390361 N1 Gbe88b9389940ab62f7580b00ce89bbd1\n" +
				"1 :1655390418.M100238P743770V0000000000000030I00000000081274AE_0.cp.uhlhosting.ch,S=3734\n",
			want: &Uidlist{
				Version: 3, UIDValidity: 1655390361, NextUID: 2,
				GUID: guid(t, "be88b9389940ab62f7580b00ce89bbd1"),
				Records: []UidRecord{
					{UID: 1, FileName: "1655390418.M100238P743770V0000000000000030I00000000081274AE_0.cp.uhlhosting.ch,S=3734"},
				},
			},
		},
		{
			name: "records from N on",
			in: "3 V1446660062 N891 Gc9411e16de473a566f06000061f01900\n" +
				"891 :1511442247.M529702P32470.mail.datahunter.org,S=201,W=206\n" +
				"892 :1511442438.M141759P32632.mail.datahunter.org,S=201,W=206\n",
			want: &Uidlist{
				Version: 3, UIDValidity: 1446660062, NextUID: 893,
				GUID: guid(t, "c9411e16de473a566f06000061f01900"),
				Records: []UidRecord{
					{UID: 891, FileName: "1511442247.M529702P32470.mail.datahunter.org,S=201,W=206"},
					{UID: 892, FileName: "1511442438.M141759P32632.mail.datahunter.org,S=201,W=206"},
				},
			},
		},
		{
			name: "version 1 (Courier)",
			in:   "1 1275660208 25022\n25006 1276528487.M364837P9451.kurkku:2,S\n25007  with space\n",
			want: &Uidlist{
				Version: 1, UIDValidity: 1275660208, NextUID: 25022,
				Records: []UidRecord{
					{UID: 25006, FileName: "1276528487.M364837P9451.kurkku:2,S"},
					{UID: 25007, FileName: "with space"},
				},
			},
		},
		{
			name: "other header fields, any order, upper-case GUID",
			in:   "3 P%08Xv%08Xu N10 G3085F01B7F11094C501100008C4A11C1  V7 x\n5 :a\n",
			want: &Uidlist{
				Version: 3, UIDValidity: 7, NextUID: 10,
				GUID:    guid(t, "3085f01b7f11094c501100008c4a11c1"),
				Header:  []Ext{{'P', "%08Xv%08Xu"}, {'x', ""}},
				Records: []UidRecord{{UID: 5, FileName: "a"}},
			},
		},
		{
			name: "no GUID (old Dovecot)",
			in:   "3 V7 N10\n",
			want: &Uidlist{Version: 3, UIDValidity: 7, NextUID: 10},
		},
		{
			name: "extension fields, spaces, invalid keys dropped",
			in:   "3 V7 N10 G3085f01b7f11094c501100008c4a11c1\n1  S12  xyz W5 G:odd O :name with  spaces \n",
			want: &Uidlist{
				Version: 3, UIDValidity: 7, NextUID: 10,
				GUID: guid(t, "3085f01b7f11094c501100008c4a11c1"),
				Records: []UidRecord{{UID: 1,
					Ext:      []Ext{{'S', "12"}, {'W', "5"}, {'G', ":odd"}, {'O', ""}},
					FileName: "name with  spaces "}},
			},
		},
		{
			name: "partial last line ignored, CRLF",
			in:   "3 V7 N10 G3085f01b7f11094c501100008c4a11c1\r\n1 :a\r\n2 :b\r\n3 W4 :c",
			want: &Uidlist{
				Version: 3, UIDValidity: 7, NextUID: 10,
				GUID:    guid(t, "3085f01b7f11094c501100008c4a11c1"),
				Records: []UidRecord{{UID: 1, FileName: "a"}, {UID: 2, FileName: "b"}},
			},
		},
		{
			name: "duplicate base: the later UID wins",
			in:   "3 V7 N10 G3085f01b7f11094c501100008c4a11c1\n1 :a:2,S\n2 :b\n3 W9 :a\n",
			want: &Uidlist{
				Version: 3, UIDValidity: 7, NextUID: 10,
				GUID:    guid(t, "3085f01b7f11094c501100008c4a11c1"),
				Records: []UidRecord{{UID: 2, FileName: "b"}, {UID: 3, Ext: []Ext{{'W', "9"}}, FileName: "a"}},
			},
		},
		{
			name: "highest UID",
			in:   "3 V7 N1\n4294967294 :a\n",
			want: &Uidlist{Version: 3, UIDValidity: 7, NextUID: 4294967295,
				Records: []UidRecord{{UID: 4294967294, FileName: "a"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUidlist([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got\n%+v\nwant\n%+v", got, tt.want)
			}
			// Round trip: what Marshal writes parses back to the same
			// list, except that file names lose their flags and the
			// version becomes 3.
			again, err := ParseUidlist(got.Marshal())
			if err != nil {
				t.Fatalf("reparsing %q: %v", got.Marshal(), err)
			}
			norm := *got
			norm.Version = 3
			norm.Records = nil
			for _, r := range got.Records {
				r.FileName = r.Base()
				norm.Records = append(norm.Records, r)
			}
			if !reflect.DeepEqual(again, &norm) {
				t.Fatalf("round trip\n%+v\nwant\n%+v", again, &norm)
			}
		})
	}
}

func TestParseUidlistErrors(t *testing.T) {
	const hdr = "3 V7 N10 G3085f01b7f11094c501100008c4a11c1\n"
	tests := []struct {
		in   string
		line int
		msg  string
	}{
		{"", 1, "missing header"},
		{"3 V7 N10", 1, "missing header"}, // no newline yet
		{"\n", 1, "invalid version"},
		{"3\n", 1, "invalid version"},
		{"x V7 N10\n", 1, "invalid version"},
		{"31 V7\n", 1, "invalid version"},
		{"2 V7 N10\n", 1, "unsupported version 2"},
		{"3 V0 N10\n", 1, "broken header"},
		{"3 V7\n", 1, "broken header"},
		{"3 \n", 1, "broken header"},
		{"3 V7 N0\n", 1, "broken header"},
		{"3 V-7 N10\n", 1, "invalid UIDVALIDITY"},
		{"3 V7x N10\n", 1, "invalid UIDVALIDITY"},
		{"3 V4294967296 N10\n", 1, "invalid UIDVALIDITY"},
		{"3 V7 N+10\n", 1, "invalid NEXTUID"},
		{"3 V7 N10 Gxyz\n", 1, "invalid mailbox GUID"},
		{"3 V7 N10 G3085f01b7f11094c501100008c4a11c\n", 1, "invalid mailbox GUID"},
		{"3 V7 N10 G3085f01b7f11094c501100008c4a11cz\n", 1, "invalid mailbox GUID"},
		{"1 7\n", 1, "version 1 header"},
		{"1 7 x\n", 1, "invalid NEXTUID"},
		{hdr + "0 :a\n", 2, "UID 0"},
		{hdr + "1 :a\n1 :b\n", 3, "not ordered"},
		{hdr + "2 :a\n1 :b\n", 3, "not ordered"},
		{hdr + "4294967295 :a\n", 2, "too high"},
		{hdr + "99999999999 :a\n", 2, "too high"},
		{hdr + "1 S12\n", 2, "missing"},
		{hdr + "1 S12 a\n", 2, "missing"},
		{hdr + "1 :\n", 2, "empty file name"},
		{hdr + "1 \n", 2, "missing"},
		{hdr + "1\n", 2, "invalid record"},
		{hdr + "1:a\n", 2, "invalid record"},
		{hdr + "abc :a\n", 2, "invalid record"},
		{hdr + " 1 :a\n", 2, "invalid record"},
		{hdr + "1 :a/b\n", 2, "contains"},
		{hdr + "1 :../x\n", 2, "contains"},
		{hdr + "1 :a\x00b\n", 2, "contains"},
		{hdr + "1 ::2,S\n", 2, "empty base"},
		{hdr + "1 :a\r\r\n", 2, "stray CR"},
		{hdr + "1 :a\rb\n", 2, "stray CR"},
		{"3 V7 N10 x\r\r\n", 1, "stray CR"},
		{"1 7 10\n10 a\n", 2, "not below NEXTUID"},
		{"1 7 10\n3 \n", 2, "empty file name"},
	}
	for _, tt := range tests {
		u, err := ParseUidlist([]byte(tt.in))
		if err == nil {
			t.Errorf("ParseUidlist(%q) = %+v, want error", tt.in, u)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != tt.line || !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseUidlist(%q) error %#v, want a *ParseError at line %d", tt.in, err, tt.line)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), "dovecot-uidlist line") {
			t.Errorf("ParseUidlist(%q) error %q, want it to mention %q", tt.in, err, tt.msg)
		}
	}
}

func TestUidlistMarshal(t *testing.T) {
	u := &Uidlist{
		Version: 1, UIDValidity: 1275660208, NextUID: 25022,
		GUID:   guid(t, "3085f01b7f11094c501100008c4a11c1"),
		Header: []Ext{{'P', "%u"}},
		Records: []UidRecord{
			{UID: 25006, FileName: "1276528487.M364837P9451.kurkku,S=1355,W=1394:2,S"},
			{UID: 25017, Ext: []Ext{{'W', "2481"}, {'G', "abc"}}, FileName: "1276533073.M242911P3632.kurkku"},
		},
	}
	want := "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1 P%u\n" +
		"25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394\n" +
		"25017 W2481 Gabc :1276533073.M242911P3632.kurkku\n"
	if got := string(u.Marshal()); got != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", got, want)
	}
	if err := u.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	empty := &Uidlist{UIDValidity: 1, NextUID: 1}
	if got := string(empty.Marshal()); got != "3 V1 N1\n" {
		t.Errorf("Marshal of an empty list without GUID = %q", got)
	}
}

func TestUidRecordExt(t *testing.T) {
	r := UidRecord{UID: 1, Ext: []Ext{{'S', "1"}, {'W', "2"}, {'S', "3"}}, FileName: "base:2,S"}
	if v, ok := r.Get('S'); !ok || v != "1" {
		t.Errorf("Get(S) = %q, %v", v, ok)
	}
	if _, ok := r.Get('G'); ok {
		t.Error("Get(G) found something")
	}
	if r.GUID() != "base" || r.Base() != "base" {
		t.Errorf("GUID = %q, Base = %q", r.GUID(), r.Base())
	}
	orig := r
	r.Set('S', "9")
	r.Set('G', "guid")
	if v, _ := orig.Get('S'); v != "1" || len(orig.Ext) != 3 {
		t.Errorf("Set changed a copy of the record: %v", orig.Ext)
	}
	want := []Ext{{'S', "9"}, {'W', "2"}, {'G', "guid"}}
	if !reflect.DeepEqual(r.Ext, want) {
		t.Errorf("after Set: %v", r.Ext)
	}
	if r.GUID() != "guid" {
		t.Errorf("GUID = %q", r.GUID())
	}
	r.Delete('W')
	if !reflect.DeepEqual(r.Ext, []Ext{{'S', "9"}, {'G', "guid"}}) {
		t.Errorf("after Delete: %v", r.Ext)
	}
}

func TestUidlistValidate(t *testing.T) {
	g := guid(t, "3085f01b7f11094c501100008c4a11c1")
	ok := func() *Uidlist {
		return &Uidlist{UIDValidity: 1, NextUID: 10, GUID: g,
			Records: []UidRecord{{UID: 1, FileName: "a"}, {UID: 5, FileName: "b:2,S"}}}
	}
	if err := ok().Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(u *Uidlist)
	}{
		{"zero UIDVALIDITY", func(u *Uidlist) { u.UIDValidity = 0 }},
		{"zero NEXTUID", func(u *Uidlist) { u.NextUID = 0 }},
		{"zero GUID", func(u *Uidlist) { u.GUID = [16]byte{} }},
		{"NEXTUID not above", func(u *Uidlist) { u.NextUID = 5 }},
		{"UID 0", func(u *Uidlist) { u.Records[0].UID = 0 }},
		{"descending", func(u *Uidlist) { u.Records[0].UID = 6 }},
		{"equal", func(u *Uidlist) { u.Records[0].UID = 5 }},
		{"max UID", func(u *Uidlist) { u.Records[1].UID = 1<<32 - 1 }},
		{"empty name", func(u *Uidlist) { u.Records[0].FileName = "" }},
		{"empty base", func(u *Uidlist) { u.Records[0].FileName = ":2,S" }},
		{"slash", func(u *Uidlist) { u.Records[0].FileName = "x/y" }},
		{"newline", func(u *Uidlist) { u.Records[0].FileName = "x\ny" }},
		{"CR", func(u *Uidlist) { u.Records[0].FileName = "x\r" }},
		{"duplicate base", func(u *Uidlist) { u.Records[0].FileName = "b" }},
		{"lower-case ext key", func(u *Uidlist) { u.Records[0].Ext = []Ext{{'s', "1"}} }},
		{"ext value with space", func(u *Uidlist) { u.Records[0].Ext = []Ext{{'S', "1 2"}} }},
		{"ext value with newline", func(u *Uidlist) { u.Records[0].Ext = []Ext{{'S', "1\n"}} }},
		{"header V", func(u *Uidlist) { u.Header = []Ext{{'V', "1"}} }},
		{"header space key", func(u *Uidlist) { u.Header = []Ext{{' ', "1"}} }},
		{"header value newline", func(u *Uidlist) { u.Header = []Ext{{'P', "a\nb"}} }},
	}
	for _, tt := range tests {
		u := ok()
		tt.change(u)
		if err := u.Validate(); err == nil {
			t.Errorf("%s: Validate passed", tt.name)
		}
		if err := WriteUidlist(t.TempDir(), u); err == nil {
			t.Errorf("%s: WriteUidlist passed", tt.name)
		}
	}
}

func TestReadWriteUidlist(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ReadUidlist(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadUidlist of a missing file: %v", err)
	}
	u := &Uidlist{UIDValidity: 1700000000, NextUID: 3, GUID: NewGUID(),
		Records: []UidRecord{{UID: 1, Ext: []Ext{{'W', "120"}}, FileName: "a,S=100"}, {UID: 2, FileName: "b"}}}
	if err := WriteUidlist(dir, u); err != nil {
		t.Fatal(err)
	}
	got, fi1, err := ReadUidlist(dir)
	if err != nil {
		t.Fatal(err)
	}
	u.Version = 3
	if !reflect.DeepEqual(got, u) {
		t.Errorf("read back %+v, want %+v", got, u)
	}
	if fi1.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi1.Mode())
	}

	// A rewrite right away gets a later mtime (to the nanosecond:
	// nextUidlistMtime), and keeps a changed mode.
	path := filepath.Join(dir, UidlistName)
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	u.NextUID = 4
	if err := WriteUidlist(dir, u); err != nil {
		t.Fatal(err)
	}
	fi2, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi2.ModTime().After(fi1.ModTime()) {
		t.Errorf("mtime did not grow: %v then %v", fi1.ModTime(), fi2.ModTime())
	}
	if fi2.Mode().Perm() != 0o640 {
		t.Errorf("mode not kept: %v", fi2.Mode())
	}
	// An old file far in the future: the new one is still later.
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	if err := WriteUidlist(dir, u); err != nil {
		t.Fatal(err)
	}
	fi3, _ := os.Stat(path)
	if want := future.Add(time.Nanosecond); !fi3.ModTime().Equal(want) {
		t.Errorf("mtime %v, want %v", fi3.ModTime(), want)
	}

	// A corrupt file gives a parse error naming the path.
	writeFile(t, path, "3 V0 N1\n")
	_, _, err = ReadUidlist(dir)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadUidlist of a corrupt file: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the mailbox dir: %v", entries)
	}
}

func TestNewGUID(t *testing.T) {
	a, b := NewGUID(), NewGUID()
	if a == b || a == [16]byte{} {
		t.Errorf("NewGUID gave %x and %x", a, b)
	}
}
