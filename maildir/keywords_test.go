package maildir

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseKeywords(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"as Dovecot writes it", "0 $Junk\n1 NonJunk\n2 $Forwarded\n", []string{"$Junk", "NonJunk", "$Forwarded"}},
		{"gaps", "1 b\n4 e\n", []string{"", "b", "", "", "e"}},
		{"out of order, later wins", "2 c\n0 a\n2 C\n", []string{"a", "", "C"}},
		{"letters only up to z", "25 last\n26 beyond\n100 far\n", append(make([]string, 25), "last")},
		{
			"lines Dovecot skips",
			"junk\n-1 minus\n+1 plus\n 1 lead\nx1 x\n1\n1 \n99999999999999999999 huge\n0 ok\n",
			[]string{"ok"},
		},
		{"name is the rest of the line", "0 two words \n1  lead\n", []string{"two words ", " lead"}},
		{"CRLF and leading zeros", "0 a\r\n01 b\r\n", []string{"a", "b"}},
		{"partial last line ignored", "0 a\n1 b", []string{"a"}},
	}
	for _, tt := range tests {
		got, err := ParseKeywords([]byte(tt.in))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: ParseKeywords = %q, want %q", tt.name, got, tt.want)
		}
	}
	if _, err := ParseKeywords([]byte("0 a\x00\n")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NUL: %v", err)
	}
}

func TestMarshalKeywords(t *testing.T) {
	kw := []string{"$Junk", "", "NonJunk", "bad\nname"}
	got := string(MarshalKeywords(kw))
	want := "0 $Junk\n2 NonJunk\n"
	if got != want {
		t.Errorf("MarshalKeywords = %q, want %q", got, want)
	}
	back, _ := ParseKeywords([]byte(got))
	if !reflect.DeepEqual(back, []string{"$Junk", "", "NonJunk"}) {
		t.Errorf("round trip = %q", back)
	}
	long := make([]string, 30)
	for i := range long {
		long[i] = "k" + string(rune('A'+i))
	}
	if n := strings.Count(string(MarshalKeywords(long)), "\n"); n != 26 {
		t.Errorf("MarshalKeywords wrote %d lines for 30 keywords", n)
	}
}

func TestValidateKeywords(t *testing.T) {
	good := [][]string{nil, {"a"}, {"", "b"}, append(make([]string, 25), "z", "", "")}
	for _, kw := range good {
		if err := ValidateKeywords(kw); err != nil {
			t.Errorf("ValidateKeywords(%q): %v", kw, err)
		}
	}
	bad := [][]string{
		{"Junk", "junk"},
		{"a\tb"},
		{"\xff"},
		append(make([]string, 26), "too many"),
	}
	for _, kw := range bad {
		if err := ValidateKeywords(kw); err == nil {
			t.Errorf("ValidateKeywords(%q) passed", kw)
		}
	}
}

func TestLookupKeyword(t *testing.T) {
	kw := []string{"", "$Junk", "NonJunk"}
	if i, ok := LookupKeyword(kw, "$junk"); !ok || i != 1 {
		t.Errorf("LookupKeyword($junk) = %d, %v", i, ok)
	}
	if _, ok := LookupKeyword(kw, ""); ok {
		t.Error("LookupKeyword found the empty name")
	}
	if _, ok := LookupKeyword(kw, "x"); ok {
		t.Error("LookupKeyword found x")
	}
}

func TestReadWriteKeywords(t *testing.T) {
	dir := t.TempDir()
	kw, fi, err := ReadKeywords(dir)
	if kw != nil || fi != nil || err != nil {
		t.Fatalf("ReadKeywords of a missing file = %v, %v, %v", kw, fi, err)
	}
	want := []string{"$Junk", "", "$Label1"}
	if err := WriteKeywords(dir, want); err != nil {
		t.Fatal(err)
	}
	got, fi1, err := ReadKeywords(dir)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadKeywords = %q, %v", got, err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, KeywordsName))
	if string(data) != "0 $Junk\n2 $Label1\n" {
		t.Errorf("file = %q", data)
	}
	// Dovecot compares whole seconds: the next write must be in a later one.
	if err := WriteKeywords(dir, append(want, "x")); err != nil {
		t.Fatal(err)
	}
	_, fi2, _ := ReadKeywords(dir)
	if fi2.ModTime().Unix() <= fi1.ModTime().Unix() {
		t.Errorf("mtime did not grow: %v then %v", fi1.ModTime(), fi2.ModTime())
	}
	if err := WriteKeywords(dir, []string{"a", "A"}); err == nil {
		t.Error("WriteKeywords accepted a duplicate")
	}
	writeFile(t, filepath.Join(dir, KeywordsName), "0 a\x00")
	if _, _, err := ReadKeywords(dir); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ReadKeywords of a corrupt file: %v", err)
	}
}
