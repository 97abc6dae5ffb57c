package maildir

import (
	"errors"
	"testing"
)

func TestMUTF7RoundTrip(t *testing.T) {
	tests := []struct{ utf8, mutf7 string }{
		{"", ""},
		{"INBOX", "INBOX"},
		{"Sent Items", "Sent Items"},
		{"&", "&-"},
		{"a&b&&", "a&-b&-&-"},
		{"Entwürfe", "Entw&APw-rfe"},
		{"日本語", "&ZeVnLIqe-"},
		// RFC 3501 section 5.1.3's example.
		{"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
		{"Ünïcödé", "&ANw-n&AO8-c&APY-d&AOk-"},
		{"Корзина", "&BBoEPgRABDcEOAQ9BDA-"},
		{"📧", "&2D3c5w-"},              // a surrogate pair
		{"\x01tab\t", "&AAE-tab&AAk-"}, // control characters are encoded
		{"a\x7fb", "a&AH8-b"},
		{"ü&ü", "&APw-&-&APw-"},
	}
	for _, tt := range tests {
		if got := EncodeMUTF7(tt.utf8); got != tt.mutf7 {
			t.Errorf("EncodeMUTF7(%q) = %q, want %q", tt.utf8, got, tt.mutf7)
		}
		got, err := DecodeMUTF7(tt.mutf7)
		if err != nil || got != tt.utf8 {
			t.Errorf("DecodeMUTF7(%q) = %q, %v; want %q", tt.mutf7, got, err, tt.utf8)
		}
	}
}

func TestDecodeMUTF7Rejects(t *testing.T) {
	bad := []string{
		"&",                    // unterminated
		"a&Jjo",                // unterminated
		"&AGE-",                // encoded printable ASCII "a"
		"&ACY-",                // encoded "&"
		"&AAA-",                // encoded NUL
		"&ZeVnLIqe-&ZeVnLIqe-", // two runs back to back
		"&APx-",                // non-zero trailing bits
		"&A-",                  // 6 bits
		"&APw",                 // no "-"
		"&AP w-",               // space in base64
		"&AP\nw-",              // newline in base64
		"&AP=-",                // padding
		"&2D0-",                // unpaired high surrogate
		"&3ec-",                // unpaired low surrogate
		"&2D3YPQ-",             // high surrogate followed by high surrogate
		"Entwürfe",             // raw non-ASCII
		"a\x7fb",               // raw DEL
		"a\tb",                 // raw control
		"&APw/-",               // "/" is not in the modified alphabet
		"&AP8A-",               // three bytes: odd length
	}
	for _, s := range bad {
		got, err := DecodeMUTF7(s)
		if err == nil {
			t.Errorf("DecodeMUTF7(%q) = %q, want error", s, got)
			continue
		}
		if !errors.Is(err, ErrMUTF7) {
			t.Errorf("DecodeMUTF7(%q) error %v does not wrap ErrMUTF7", s, err)
		}
	}
}

func TestEncodeMUTF7InvalidUTF8(t *testing.T) {
	// Invalid bytes become U+FFFD, so the result still decodes.
	got := EncodeMUTF7("a\xffb")
	if got != "a&,,0-b" {
		t.Fatalf("EncodeMUTF7 = %q", got)
	}
	if s, err := DecodeMUTF7(got); err != nil || s != "a\uFFFDb" {
		t.Fatalf("DecodeMUTF7(%q) = %q, %v", got, s, err)
	}
}
