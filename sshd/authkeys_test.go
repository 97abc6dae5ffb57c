package sshd

import (
	"crypto/ed25519"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// testKeyLine is a fixed ed25519 public key in authorized_keys form.
var testKeyLine = func() string {
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public()
	k, err := gossh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}()

func TestParseAuthLine(t *testing.T) {
	k := testKeyLine
	good := []struct {
		line  string
		from  string
		users string
	}{
		{k + " comment", "", ""},
		{`users="alice" ` + k, "", "alice"},
		{`users="alice,*@example.com",from="127.0.0.1,10.0.0.0/8" ` + k + " c", "127.0.0.1,10.0.0.0/8", "alice,*@example.com"},
		{`restrict,no-pty,USERS="a" ` + k, "", "a"},
		{`From="192.168.1.*,!192.168.1.5",users="*" ` + k, "192.168.1.*,!192.168.1.5", "*"},
		{`from="::1,fe80::/10,2001:db8::*",users="x" ` + k, "::1,fe80::/10,2001:db8::*", "x"},
		{`no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc,users="a" ` + k, "", "a"},
	}
	for _, g := range good {
		_, e, err := parseAuthLine([]byte(g.line))
		if err != nil {
			t.Errorf("%q: %v", g.line, err)
			continue
		}
		if (e.from == nil) != (g.from == "") || e.from != nil && e.from.src != g.from {
			t.Errorf("%q: from = %v, want %q", g.line, e.from, g.from)
		}
		if (e.users == nil) != (g.users == "") || e.users != nil && e.users.src != g.users {
			t.Errorf("%q: users = %v, want %q", g.line, e.users, g.users)
		}
	}
	bad := []struct{ line, want string }{
		{`command="/bin/sh" ` + k, "command= is not supported"},
		{`environment="A=B" ` + k, `unknown or unsupported option "environment"`},
		{`permitopen="a:1" ` + k, "unknown or unsupported"},
		{`port-forwarding ` + k, "unknown or unsupported"},
		{`cert-authority ` + k, "unknown or unsupported"},
		{`pty ` + k, "unknown or unsupported"},
		{`users=alice ` + k, "double quotes"},
		{`users ` + k, "needs a value"},
		{`users="" ` + k, "empty pattern list"},
		{`users="a,,b" ` + k, "empty pattern"},
		{`users="a b" ` + k, "not allowed"},
		{`users="a\"b" ` + k, "not allowed"},
		{`users="a"b" ` + k, "no valid key"},
		{`users="!" ` + k, "empty pattern"},
		{`users="a",users="b" ` + k, "given twice"},
		{`from="mx2.example.com",users="a" ` + k, "host names are not matched"},
		{`from="*.example.com",users="a" ` + k, "host names are not matched"},
		{`from="10.1.2.3/8",users="a" ` + k, "did you mean 10.0.0.0/8"},
		{`from="10.0.0.0/33",users="a" ` + k, "not a CIDR prefix"},
		{`from="fe80::1%eth0",users="a" ` + k, "zones"},
		{`no-pty="x",users="a" ` + k, "takes no value"},
		{"ssh-ed25519 AAAAnotbase64!!", "no valid key"},
		{"garbage", "no valid key"},
		{k + "\x00", ""}, // key data with a NUL in the comment: parses or not, must not panic
	}
	for _, b := range bad {
		_, _, err := parseAuthLine([]byte(b.line))
		if b.want == "" {
			continue
		}
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%q: err = %v, want it to mention %q", b.line, err, b.want)
		}
	}
}

func TestPatternLists(t *testing.T) {
	users := []struct {
		list string
		yes  []string
		no   []string
	}{
		{"alice", []string{"alice"}, []string{"bob", "alice2", "Alice", ""}},
		{"alice,*@example.com", []string{"alice", "bob@example.com", "@example.com"}, []string{"bob", "bob@example.org", "bob@example.com.evil"}},
		{"*,!root", []string{"alice", "rooty"}, []string{"root"}},
		{"!bob", nil, []string{"bob", "alice"}}, // negations alone allow nobody
		{"a?c", []string{"abc", "a-c"}, []string{"ac", "abbc"}},
		{"*a*a*a*a*b", []string{"aaaab", "xaxaxaxab"}, []string{strings.Repeat("a", 200)}},
	}
	for _, u := range users {
		l, err := parseUserList(u.list)
		if err != nil {
			t.Fatalf("%q: %v", u.list, err)
		}
		for _, y := range u.yes {
			if !l.matchUser(y) {
				t.Errorf("users=%q does not allow %q", u.list, y)
			}
		}
		for _, n := range u.no {
			if l.matchUser(n) {
				t.Errorf("users=%q allows %q", u.list, n)
			}
		}
	}
	addrs := []struct {
		list string
		yes  []string
		no   []string
	}{
		{"127.0.0.1", []string{"127.0.0.1", "::ffff:127.0.0.1"}, []string{"127.0.0.2", "::1"}},
		{"10.0.0.0/8,!10.9.9.9", []string{"10.1.2.3", "::ffff:10.0.0.1"}, []string{"10.9.9.9", "11.0.0.1"}},
		{"192.168.1.*", []string{"192.168.1.7", "192.168.1.254"}, []string{"192.168.2.1", "192.168.10.1"}},
		{"192.168.1.?", []string{"192.168.1.7"}, []string{"192.168.1.77"}},
		{"*", []string{"1.2.3.4", "::1"}, nil},
		{"*,!::1", []string{"1.2.3.4"}, []string{"::1"}},
		{"::1", []string{"::1"}, []string{"127.0.0.1"}},
		{"2001:DB8::*", []string{"2001:db8::5"}, []string{"2001:db9::5"}},
		{"0:0:0:0:0:0:0:1", []string{"::1"}, nil},
		{"fe80::/10", []string{"fe80::1%eth0"}, []string{"fec0::1"}},
		{"!127.0.0.1", nil, []string{"127.0.0.1", "1.1.1.1"}},
	}
	for _, a := range addrs {
		l, err := parseFromList(a.list)
		if err != nil {
			t.Fatalf("%q: %v", a.list, err)
		}
		for _, y := range a.yes {
			if !l.matchAddr(netip.MustParseAddr(y)) {
				t.Errorf("from=%q does not allow %s", a.list, y)
			}
		}
		for _, n := range a.no {
			if l.matchAddr(netip.MustParseAddr(n)) {
				t.Errorf("from=%q allows %s", a.list, n)
			}
		}
	}
}

// The lines of one key are a union; every refusal says why, with the line.
func TestAuthorizeUnion(t *testing.T) {
	k := testKeyLine
	data := strings.Join([]string{
		"# comment",
		`from="10.0.0.0/8",users="bob" ` + k,
		``,
		`users="alice" ` + k,
		`bogus-option ` + k,
		`from="192.168.0.0/16" ` + k,
	}, "\n")
	var bad []int
	ak := parseAuthorizedKeys([]byte(data), func(line int, err error) { bad = append(bad, line) })
	if len(bad) != 1 || bad[0] != 5 {
		t.Fatalf("refused lines %v, want [5]", bad)
	}
	key, _, _, _, _ := gossh.ParseAuthorizedKey([]byte(k))
	lo, ten, lan := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.1.1"), netip.MustParseAddr("192.168.1.1")
	cases := []struct {
		addr netip.Addr
		user string
		ok   bool
		why  string
	}{
		{lo, "", true, ""},
		{lo, "alice", true, ""},
		{lo, "bob", false, `f:4: user "bob" not allowed by users="alice"`},
		{ten, "bob", true, ""},
		{lan, "", true, ""},      // line 4 has no from=
		{lan, "alice", true, ""}, // line 4 has no from=
		{lan, "bob", false, "f:2: source address 192.168.1.1 not allowed by from=\"10.0.0.0/8\"; f:4: user \"bob\" not allowed by users=\"alice\"; f:6: the key has no users= option"},
	}
	for _, c := range cases {
		why := ak.authorize(key, c.addr, c.user, "f")
		if (why == "") != c.ok || !strings.Contains(why, c.why) {
			t.Errorf("%s %q: %q", c.addr, c.user, why)
		}
	}
	other, _, _, _, _ := gossh.ParseAuthorizedKey([]byte(strings.TrimSpace(string(gossh.MarshalAuthorizedKey(mustKey(t, 7))))))
	if why := ak.authorize(other, lo, "alice", "f"); !strings.Contains(why, "key not in the authorized keys file") {
		t.Errorf("unknown key: %q", why)
	}
}

func mustKey(t testing.TB, seed byte) gossh.PublicKey {
	s := make([]byte, 32)
	s[0] = seed
	k, err := gossh.NewPublicKey(ed25519.NewKeyFromSeed(s).Public())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestValidUserAndCommand(t *testing.T) {
	for _, u := range []string{"alice", "bob@example.com", "a.b", "ü", strings.Repeat("x", 255)} {
		if err := ValidUser(u); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
	for _, u := range []string{"", "../x", "a/b", "..", "-x", "a\x01", "a\x7f", "a b", "a\tb", "a\u00a0b", "\xff", strings.Repeat("x", 256), strings.Repeat("x", 300)} {
		if err := ValidUser(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	ok := map[string]string{
		"twinbox serve -u alice": "alice",
		"serve -u bob":           "bob",
		"twinbox  serve -u  a@b": "a@b",
	}
	for c, want := range ok {
		if u, err := ParseCommand(c); err != nil || u != want {
			t.Errorf("%q: %q, %v", c, u, err)
		}
	}
	for _, c := range []string{"", "ls", "twinbox serve -u alice; ls", "twinbox serve --root /", "twinbox serve -u alice extra",
		"twinbox serve -u", "twinbox serve -ualice", "/usr/bin/twinbox serve -u alice", "twinbox serve -u alice\nls",
		"twinbox sync -u alice", "twinbox serve -u ../x", "twinbox\tserve -u alice", "sh -c 'twinbox serve -u alice'"} {
		if u, err := ParseCommand(c); err == nil {
			t.Errorf("%q accepted (user %q)", c, u)
		}
	}
}

// wildcardMatch agrees with the regular expression the pattern means
// (ASCII inputs, where a byte is a character).
func checkWildcard(t *testing.T, pat, s string) {
	re := "(?s)^"
	for _, c := range pat {
		switch c {
		case '*':
			re += ".*"
		case '?':
			re += "."
		default:
			re += regexp.QuoteMeta(string(c))
		}
	}
	want := regexp.MustCompile(re + "$").MatchString(s)
	if got := wildcardMatch(pat, s); got != want {
		t.Fatalf("wildcardMatch(%q, %q) = %v, regexp says %v", pat, s, got, want)
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func TestWildcard(t *testing.T) {
	for _, c := range [][2]string{{"", ""}, {"", "a"}, {"*", ""}, {"a*", "a"}, {"*b", "ab"}, {"a*b*c", "aXbYc"}, {"a*b*c", "aXbY"}, {"?", ""}, {"**?", "x"}, {"a*a", "aaa"}} {
		checkWildcard(t, c[0], c[1])
	}
}

// FuzzAuthLine: any line either is refused with an error or yields
// consistent lists; matching never panics and wildcards agree with
// regular expressions.
func FuzzAuthLine(f *testing.F) {
	k := testKeyLine
	for _, s := range []string{
		k, `users="alice" ` + k, `from="10.0.0.0/8,!10.1.1.1",users="*@x" ` + k,
		`restrict,users="a\"b" ` + k, `command="x" ` + k, `from="192.168.*" ` + k,
	} {
		f.Add(s, "alice", "10.1.2.3")
	}
	f.Fuzz(func(t *testing.T, line, user, addr string) {
		key, e, err := parseAuthLine([]byte(line))
		if err != nil {
			if key != nil || e != nil {
				t.Fatal("error with a result")
			}
		} else {
			if key == nil || e == nil {
				t.Fatal("no error and no result")
			}
			if e.users != nil {
				for _, p := range e.users.pats {
					if p.glob == "" {
						t.Fatalf("empty user pattern accepted in %q", line)
					}
				}
				e.users.matchUser(user)
			}
			if e.from != nil {
				if a, err := netip.ParseAddr(addr); err == nil {
					e.from.matchAddr(a)
				}
			}
		}
		if len(user) < 40 && len(addr) < 40 && isASCII(user) && isASCII(addr) {
			checkWildcard(t, user, addr)
		}
		if len(line) < 4096 && strings.Contains(line, "\n") {
			// A file of such lines parses line by line without panic.
			parseAuthorizedKeys([]byte(line), func(int, error) {})
		}
	})
}
