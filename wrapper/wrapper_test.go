package wrapper

import (
	"io"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	ok := map[string]Request{
		"twinbox serve -u bob":                {User: "bob"},
		"/usr/local/bin/twinbox serve -u bob": {User: "bob"},
		"serve -u bob@ex.org":                 {User: "bob@ex.org"},
		"twinbox serve -ubob":                 {User: "bob"},
		"twinbox serve --user bob":            {User: "bob"},
		"twinbox serve --user=bob":            {User: "bob"},
		"twinbox serve --user-prefix":         {Prefix: true},
		"":                                    {Prefix: true},
		"  ":                                  {Prefix: true},
		"twinbox  serve   -u 'bob'":           {User: "bob"},
	}
	for cmd, want := range ok {
		got, err := ParseCommand(cmd)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", cmd, got, err, want)
		}
	}
	bad := []string{
		"ls", "sh", "/bin/sh -c id", "twinbox serve -u bob; ls", "twinbox serve -u bob && id",
		"twinbox serve --root /", "twinbox serve -u bob --root /", "twinbox sync a b", "twinbox wrapper",
		"twinbox serve -u ../x", "twinbox serve -u a/b", "twinbox serve -u -x", "twinbox serve -u", "twinbox serve",
		"twinbox serve -u " + strings.Repeat("a", 300), "twinbox serve -u 'a b'", "twinbox serve -u 'a\x01'",
		"scp -t /etc", "rsync --server . /", "evil/twinbox-x serve -u bob", "twinbox serve -u 'bob",
		"internal-sftp", "twinbox serve --user-prefix -u bob",
	}
	for _, cmd := range bad {
		if got, err := ParseCommand(cmd); err == nil {
			t.Errorf("%q accepted: %+v", cmd, got)
		} else if !strings.Contains(err.Error(), "refused") {
			t.Errorf("%q: %v (no \"refused\")", cmd, err)
		}
	}
}

func TestReadUserLine(t *testing.T) {
	r := strings.NewReader("bob@ex.org\nH\x00rest")
	u, err := ReadUserLine(r)
	if err != nil || u != "bob@ex.org" {
		t.Fatalf("%q %v", u, err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "H\x00rest" {
		t.Errorf("read past the line: rest %q", rest)
	}
	if u, err := ReadUserLine(strings.NewReader("bob\r\n")); err != nil || u != "bob" {
		t.Errorf("crlf: %q %v", u, err)
	}
	for _, in := range []string{"", "bob", "../x\n", "a b\n", "\n", strings.Repeat("a", 400) + "\n", "-x\n"} {
		if u, err := ReadUserLine(strings.NewReader(in)); err == nil {
			t.Errorf("%q accepted: %q", in, u)
		}
	}
}
