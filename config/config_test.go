package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/maildir"
)

func TestValidUserName(t *testing.T) {
	good := []string{"bob", "bob@example.org", "b.o-b_1+x", "ünï@exämple.org", strings.Repeat("a", 255)}
	bad := []string{"", "../x", "a/b", "..", "a..b", "-x", "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a\u0085b", strings.Repeat("a", 256), "a\\b", "%u", "\xff"}
	for _, u := range good {
		if err := ValidUserName(u); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
	for _, u := range bad {
		if ValidUserName(u) == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

func TestExpand(t *testing.T) {
	tests := []struct {
		t, user, home string
		haveHome      bool
		want, err     string
	}{
		{"/var/vmail/%d/%n/Maildir", "bob@ex.org", "", false, "/var/vmail/ex.org/bob/Maildir", ""},
		{"/var/vmail/%{domain}/%{username}", "bob@ex.org", "", false, "/var/vmail/ex.org/bob", ""},
		{"maildir:%h/Maildir:LAYOUT=fs", "bob", "/home/bob", true, "maildir:/home/bob/Maildir:LAYOUT=fs", ""},
		{"/m/%u/100%%", "bob", "", false, "/m/bob/100%", ""},
		{"/m/%d/%n", "bob", "", false, "", "no domain"},
		{"/m/%h", "bob", "", false, "", "no home"},
		{"/m/%x", "bob", "", false, "", "unknown placeholder"},
		{"/m/%", "bob", "", false, "", "ends in"},
		{"/m/%{user", "bob", "", false, "", "unclosed"},
	}
	for _, tt := range tests {
		got, err := expand(tt.t, tt.user, tt.home, tt.haveHome)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %q, %v; want error %q", tt.t, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.t, got, err, tt.want)
		}
	}
}

func TestExpandCommand(t *testing.T) {
	vars := map[string]string{"login": "vmail", "host": "mx2", "port": "", "user": "bob@ex.org"}
	got, err := ExpandCommand(DefaultSSHCommand, vars)
	want := []string{"ssh", "-lvmail", "mx2", "twinbox", "serve", "-u", "bob@ex.org"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("default: %q, %v", got, err)
	}
	vars["login"] = ""
	got, _ = ExpandCommand(`ssh -p%{port} -l%{login} -o 'ProxyJump a b' "%{host}" /opt/twin\ box serve -u %u`, vars)
	want = []string{"ssh", "-o", "ProxyJump a b", "mx2", "/opt/twin box", "serve", "-u", "bob@ex.org"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("quoted: %q", got)
	}
	// A user name with shell syntax stays one word: nothing is run by a shell.
	vars["user"] = "x;rm"
	got, _ = ExpandCommand(DefaultSSHCommand, vars)
	if got[len(got)-1] != "x;rm" {
		t.Errorf("user word: %q", got)
	}
	for _, bad := range []string{"", "ssh 'x", `ssh "x`, `ssh x\`, "ssh %{nope}", "ssh %"} {
		if _, err := ExpandCommand(bad, vars); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TWINBOX_CONFIG", "")
	good := writeFile(t, dir, "good.toml", `version = 1
replica_id = "mx1"
peer = "remote:vmail@mx2"
[users]
path = "/var/vmail/%d/%n/Maildir"
[sshd]
listen = "127.0.0.1:2222"
host_key = "/var/lib/twinbox/host_key"
authorized_keys = "/etc/twinbox/authorized_keys"
idle_timeout = "2m"
[[listen.secret]]
name = "mx2"
file = "/etc/twinbox/mx2.secret"
users = ["*@ex.org"]
`)
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.ReplicaID != "mx1" || c.Peer != "remote:vmail@mx2" || c.SSHD.IdleTimeout.Minutes() != 2 || c.SSHD.MaxSession.Hours() != 12 || c.Listen.Secrets[0].Users[0] != "*@ex.org" {
		t.Errorf("loaded %+v", c)
	}
	t.Setenv("TWINBOX_REPLICA_ID", "mx9")
	if c, err := Load(good); err != nil || c.ReplicaID != "mx9" {
		t.Errorf("env override: %v %v", c, err)
	}
	var sb strings.Builder
	if err := c.Effective(&sb); err != nil || !strings.Contains(sb.String(), `replica_id = "mx1"`) {
		t.Errorf("effective: %v\n%s", err, sb.String())
	}
	for name, tt := range map[string]struct{ content, want string }{
		"unknown key":  {"version = 1\nreplica_idd = \"x\"\n", "unknown setting(s): replica_idd"},
		"no version":   {"replica_id = \"x\"\n", "no version"},
		"new version":  {"version = 2\n", "version 2, this build reads version 1"},
		"bad toml":     {"version = \n", "config"},
		"bad duration": {"version = 1\n[sshd]\nidle_timeout = \"soon\"\n", "idle_timeout"},
		"two sources":  {"version = 1\n[users]\npasswd_file = \"/x\"\ncommand = \"ls\"\npath = \"/m/%u\"\n", "exclude each other"},
		"cmd no path":  {"version = 1\n[users]\ncommand = \"ls\"\n", "needs users.path"},
		"bad template": {"version = 1\n[users]\npath = \"/m/%q\"\n", "unknown placeholder"},
		"bad ssh":      {"version = 1\n[ssh]\ncommand = \"ssh 'x\"\n", "unclosed"},
		"secret users": {"version = 1\n[listen]\ntcp = \":1\"\n[[listen.secret]]\nname = \"a\"\nfile = \"/f\"\n", "no users"},
		"tcps no cert": {"version = 1\n[listen]\ntcps = \":1\"\n[[listen.secret]]\nname = \"a\"\nfile = \"/f\"\nusers=[\"*\"]\n", "cert_file"},
		"bad id":       {"version = 1\nreplica_id = \"a b\"\n", "replica_id"},
	} {
		p := writeFile(t, dir, "bad.toml", tt.content)
		t.Setenv("TWINBOX_REPLICA_ID", "")
		os.Unsetenv("TWINBOX_REPLICA_ID")
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", name, err, tt.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("a missing explicit file was accepted")
	}
}

func TestUserSources(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	// Path template: known when the root exists.
	os.MkdirAll(filepath.Join(dir, "ex.org", "bob", "Maildir"), 0o700)
	c := Default()
	c.Users.Path = dir + "/%d/%n/Maildir"
	us, err := c.UserSource()
	if err != nil {
		t.Fatal(err)
	}
	u, err := us.Lookup(ctx, "bob@ex.org")
	if err != nil || u.Location != dir+"/ex.org/bob/Maildir" || u.UID != os.Getuid() {
		t.Errorf("path: %+v %v", u, err)
	}
	if _, err := us.Lookup(ctx, "eve@ex.org"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown: %v", err)
	}
	if _, err := us.Lookup(ctx, "../ex.org/bob"); err == nil {
		t.Error("traversal accepted")
	}
	// Passwd-file.
	pw := writeFile(t, dir, "users", `# comment
alice:{PLAIN}x:5000:5001::/home/alice::userdb_mail=maildir:~/Maildir:LAYOUT=fs:INDEX=/var/idx
bob:{PLAIN}x:5000:5000::/home/bob
`)
	// Every option of a userdb mail location reaches ParseLocation: the
	// UTF-8 folder names (Dovecot's spelling), and CONTROL=, which it
	// refuses (dropped, twinbox would misread names or write uidlists
	// Dovecot never reads).
	pw2 := writeFile(t, dir, "users2", `utf:x:5000:5000::/home/utf::userdb_mail=maildir:~/M:UTF-8
ctl:x:5000:5000::/home/ctl::userdb_mail=maildir:~/M:CONTROL=~/ctl
`)
	c = Default()
	c.Users.PasswdFile = pw2
	us, _ = c.UserSource()
	if u, err := us.Lookup(ctx, "utf"); err != nil || u.Location != "maildir:/home/utf/M:UTF-8" {
		t.Errorf("utf: %+v %v", u, err)
	} else if loc, err := maildir.ParseLocation(u.Location); err != nil || !loc.UTF8 {
		t.Errorf("utf's location %q: %+v, %v", u.Location, loc, err)
	}
	if u, err := us.Lookup(ctx, "ctl"); err != nil || u.Location != "maildir:/home/ctl/M:CONTROL=~/ctl" {
		t.Errorf("ctl: %+v %v", u, err)
	} else if _, err := maildir.ParseLocation(u.Location); err == nil || !strings.Contains(err.Error(), "CONTROL") {
		t.Errorf("ctl's location %q: %v, want an error about CONTROL=", u.Location, err)
	}
	c = Default()
	c.Users.PasswdFile = pw
	c.Users.Path = "%h/Mail"
	us, _ = c.UserSource()
	u, err = us.Lookup(ctx, "alice")
	if err != nil || u.Location != "maildir:/home/alice/Maildir:LAYOUT=fs:INDEX=/var/idx" || u.UID != 5000 || u.GID != 5001 {
		t.Errorf("alice: %+v %v", u, err)
	}
	if loc, err := maildir.ParseLocation(u.Location); err != nil || loc.Layout != maildir.LayoutFS || loc.Index != "/var/idx" {
		t.Errorf("alice's location %q: %+v, %v", u.Location, loc, err)
	}
	u, err = us.Lookup(ctx, "bob")
	if err != nil || u.Location != "/home/bob/Mail" {
		t.Errorf("bob: %+v %v", u, err)
	}
	if _, err := us.Lookup(ctx, "carol"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("carol: %v", err)
	}
	names, _ := us.List(ctx)
	if len(names) != 2 {
		t.Errorf("list: %v", names)
	}
	// A bad line names the file and line.
	c.Users.PasswdFile = writeFile(t, dir, "bad", "ok:x\n../x:y\n")
	us, _ = c.UserSource()
	if _, err := us.Lookup(ctx, "ok"); err == nil || !strings.Contains(err.Error(), "bad:2") {
		t.Errorf("bad passwd-file: %v", err)
	}
	// Command.
	c = Default()
	c.Users.Command = "printf 'carol@ex.org extra\\n\\ndave@ex.org\\n'"
	c.Users.Path = dir + "/%d/%n"
	us, _ = c.UserSource()
	if u, err := us.Lookup(ctx, "carol@ex.org"); err != nil || u.Location != dir+"/ex.org/carol" {
		t.Errorf("command: %+v %v", u, err)
	}
	if _, err := us.Lookup(ctx, "bob@ex.org"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("command unknown: %v", err)
	}
	c.Users.Command = "echo oops >&2; exit 3"
	us, _ = c.UserSource()
	if _, err := us.Lookup(ctx, "carol@ex.org"); err == nil || !strings.Contains(err.Error(), "oops") {
		t.Errorf("failing command: %v", err)
	}
	if _, err := Default().UserSource(); err == nil {
		t.Error("no user source accepted")
	}
}

func TestMatchUser(t *testing.T) {
	for _, tt := range []struct {
		p, n string
		ok   bool
	}{{"*", "bob", true}, {"*@ex.org", "bob@ex.org", true}, {"*@ex.org", "bob@ex.orgx", false}, {"b?b", "bob", true}, {"[b]ob", "bob", false}, {"[b]ob", "[b]ob", true}, {"alice", "bob", false}} {
		if got := MatchUser(tt.p, tt.n); got != tt.ok {
			t.Errorf("%q %q: %v", tt.p, tt.n, got)
		}
	}
}
