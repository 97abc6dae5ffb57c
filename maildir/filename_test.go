package maildir

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseFileName(t *testing.T) {
	tests := []struct {
		in   string
		want FileName
		out  string // String(); "" means in
	}{
		// From Dovecot's Maildir documentation.
		{
			in: "1491941793.M41850P8566V0000000000000015I0000000004F3030E_0.mx1.example.com,S=10956:2,STln",
			want: FileName{
				Base: "1491941793.M41850P8566V0000000000000015I0000000004F3030E_0.mx1.example.com,S=10956",
				Size: 10956, VSize: -1, Flags: FlagSeen | FlagTrashed,
				Keywords: 1<<('l'-'a') | 1<<('n'-'a'), HasInfo: true,
			},
		},
		{
			in: "1276528487.M364837P9451.kurkku,S=1355,W=1394:2,",
			want: FileName{
				Base: "1276528487.M364837P9451.kurkku,S=1355,W=1394",
				Size: 1355, VSize: 1394, HasInfo: true,
			},
		},
		{
			in:   "1511442247.M529702P32470.mail.datahunter.org,S=201,W=206",
			want: FileName{Base: "1511442247.M529702P32470.mail.datahunter.org,S=201,W=206", Size: 201, VSize: 206},
		},
		{
			in:   "1655390418.M100238P743770V0000000000000030I00000000081274AE_0.cp.uhlhosting.ch,S=3734:2,S",
			want: FileName{Base: "1655390418.M100238P743770V0000000000000030I00000000081274AE_0.cp.uhlhosting.ch,S=3734", Size: 3734, VSize: -1, Flags: FlagSeen, HasInfo: true},
		},
		{"m:2,DFPRST", FileName{Base: "m", Size: -1, VSize: -1, Flags: AllFlags, HasInfo: true}, ""},
		{"m:2,SR", FileName{Base: "m", Size: -1, VSize: -1, Flags: FlagSeen | FlagReplied, HasInfo: true}, "m:2,RS"},
		{"m:2,SSa", FileName{Base: "m", Size: -1, VSize: -1, Flags: FlagSeen, Keywords: 1, HasInfo: true}, "m:2,Sa"},
		{"m:2,zaS", FileName{Base: "m", Size: -1, VSize: -1, Flags: FlagSeen, Keywords: 1 | 1<<25, HasInfo: true}, "m:2,Saz"},
		// Unknown flags are kept and merged in ASCII order.
		{"m:2,aZS9", FileName{Base: "m", Size: -1, VSize: -1, Flags: FlagSeen, Keywords: 1, HasInfo: true, Unknown: "9Z"}, "m:2,9SZa"},
		// A foreign info part is kept verbatim.
		{"m:1,foo bar", FileName{Base: "m", Size: -1, VSize: -1, Unknown: "1,foo bar"}, ""},
		{"m:", FileName{Base: "m", Size: -1, VSize: -1}, "m"},
		// Size fields: first occurrence, digits up to "," or the end.
		{"m,S=12abc", FileName{Base: "m,S=12abc", Size: -1, VSize: -1}, ""},
		{"m,S=,W=5", FileName{Base: "m,S=,W=5", Size: -1, VSize: 5}, ""},
		{"m,W=7,S=5", FileName{Base: "m,W=7,S=5", Size: 5, VSize: 7}, ""},
		{"m,S=1x,S=2", FileName{Base: "m,S=1x,S=2", Size: -1, VSize: -1}, ""},
		{"m,S=99999999999999999999", FileName{Base: "m,S=99999999999999999999", Size: -1, VSize: -1}, ""},
		{"m,S=0:2,S", FileName{Base: "m,S=0", Size: 0, VSize: -1, Flags: FlagSeen, HasInfo: true}, ""},
		{"with space,S=3", FileName{Base: "with space,S=3", Size: 3, VSize: -1}, ""},
		{"ünïcode", FileName{Base: "ünïcode", Size: -1, VSize: -1}, ""},
	}
	for _, tt := range tests {
		got, err := ParseFileName(tt.in)
		if err != nil {
			t.Errorf("ParseFileName(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseFileName(%q) =\n %+v, want\n %+v", tt.in, got, tt.want)
		}
		out := tt.out
		if out == "" {
			out = tt.in
		}
		if s := got.String(); s != out {
			t.Errorf("ParseFileName(%q).String() = %q, want %q", tt.in, s, out)
		}
	}
}

func TestParseFileNameRejects(t *testing.T) {
	for _, in := range []string{
		"",
		".hidden",
		".",
		"..",
		"a/b",
		"../etc",
		"a\x00b",
		"a\nb",
		"a\rb",
		"a\tb",
		"a\x7fb",
		":2,S",
		"a:b:2,S",
		"a:2,S:",
		"a:2,S,X",
		"a:2,S X",
		"a:2,Sü",
		"\xff\xfe",
		strings.Repeat("a", 256),
	} {
		got, err := ParseFileName(in)
		if err == nil {
			t.Errorf("ParseFileName(%q) = %+v, want error", in, got)
			continue
		}
		if !errors.Is(err, ErrInvalidFileName) {
			t.Errorf("ParseFileName(%q) error %v does not wrap ErrInvalidFileName", in, err)
		}
	}
	if _, err := ParseFileName(strings.Repeat("a", 255)); err != nil {
		t.Errorf("255-byte name rejected: %v", err)
	}
}

func TestWithFlags(t *testing.T) {
	tests := []struct {
		in  string
		fl  Flags
		kw  uint32
		out string
	}{
		{"m", FlagSeen, 0, "m:2,S"},
		{"m", 0, 0, "m:2,"},
		{"m:2,S", 0, 0, "m:2,"},
		{"m:2,ST", FlagFlagged | FlagSeen, 1<<2 | 1, "m:2,FSac"},
		{"m:2,SZ", FlagFlagged, 1, "m:2,FZa"}, // unknown flag kept
		{"m:1,foo", FlagSeen, 0, "m:2,S"},     // foreign info dropped
		{"m,S=5:2,", 0xff, 0xffffffff, "m,S=5:2,DFPRSTabcdefghijklmnopqrstuvwxyz"},
	}
	for _, tt := range tests {
		f, err := ParseFileName(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		g := f.WithFlags(tt.fl, tt.kw)
		if s := g.String(); s != tt.out {
			t.Errorf("%q.WithFlags(%v, %b) = %q, want %q", tt.in, tt.fl, tt.kw, s, tt.out)
		}
		if g.Base != f.Base || g.Size != f.Size || g.VSize != f.VSize {
			t.Errorf("WithFlags changed the identity: %+v -> %+v", f, g)
		}
		if f.String() != tt.in {
			t.Errorf("WithFlags modified its receiver: %q", f.String())
		}
	}
	// A FileName built by hand without HasInfo still writes its flags.
	if s := (FileName{Base: "x", Flags: FlagSeen}).String(); s != "x:2,S" {
		t.Errorf("String = %q", s)
	}
}

func TestFlagsString(t *testing.T) {
	if s := (FlagSeen | FlagDraft | FlagTrashed).String(); s != "DST" {
		t.Errorf("Flags.String = %q", s)
	}
}

func TestNewBase(t *testing.T) {
	tm := time.Unix(1700000000, 123456789)
	got := NewBase(tm, 7, "mx1.example.com", 1234, 1260)
	want := fmt.Sprintf("1700000000.M123456P%dQ7.mx1.example.com,S=1234,W=1260", os.Getpid())
	if got != want {
		t.Errorf("NewBase = %q, want %q", got, want)
	}
	f, err := ParseFileName(got)
	if err != nil || f.Size != 1234 || f.VSize != 1260 || f.Base != got {
		t.Errorf("ParseFileName(NewBase) = %+v, %v", f, err)
	}

	got = NewBase(tm, 8, "we/ird:host,S=1\n", -1, -1)
	if !strings.HasSuffix(got, `Q8.we\057ird\072host\054S=1\012`) {
		t.Errorf("NewBase with odd host = %q", got)
	}
	if f, err := ParseFileName(got); err != nil || f.Size != -1 {
		t.Errorf("ParseFileName(%q) = %+v, %v", got, f, err)
	}

	got = NewBase(tm, 9, "", 5, -1)
	if ok, _ := regexp.MatchString(`^1700000000\.M123456P\d+Q9\.localhost,S=5$`, got); !ok {
		t.Errorf("NewBase with empty host = %q", got)
	}
}
