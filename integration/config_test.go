package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheck: `twinbox config check` prints the effective settings
// and fails, naming the setting, on a bad file or a secret file that is
// too open or too short.
func TestConfigCheck(t *testing.T) {
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "mail", "bob"), 0o700)
	secret := filepath.Join(d, "mx2.secret")
	os.WriteFile(secret, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n"), 0o600)
	good := filepath.Join(d, "good.toml")
	os.WriteFile(good, []byte(`version = 1
replica_id = "mx1"
peer = "remote:vmail@mx2"
[users]
path = "`+d+`/mail/%u"
[[listen.secret]]
name = "mx2"
file = "`+secret+`"
users = ["*"]
`), 0o644)
	r := runWant(t, 0, "--config", good, "config", "check")
	for _, want := range []string{`replica_id = "mx1"`, `peer = "remote:vmail@mx2"`, `path = "` + d + `/mail/%u"`, `command = "ssh -l%{login} %{host} twinbox serve -u %u"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("effective settings lack %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "c2VjcmV0") {
		t.Errorf("config check printed a secret:\n%s", r.stdout)
	}
	// Env overrides show, and are said to.
	r = startEnv(t, []string{"TWINBOX_REPLICA_ID=mx7"}, "--config", good, "config", "check").wait(cmdTimeout)
	if r.code != 0 || !strings.Contains(r.stdout, `replica_id = "mx7"`) || !strings.Contains(r.stdout, "TWINBOX_REPLICA_ID") {
		t.Errorf("env override:\n%s", r)
	}
	// A secret readable by others, then a short one.
	os.Chmod(secret, 0o644)
	r = runWant(t, 1, "--config", good, "config", "check")
	if !strings.Contains(r.stderr, "lets others read or write it") {
		t.Errorf("open secret file:\n%s", r)
	}
	os.WriteFile(secret, []byte("c2hvcnQ=\n"), 0o600)
	os.Chmod(secret, 0o600)
	r = runWant(t, 1, "--config", good, "config", "check")
	if !strings.Contains(r.stderr, "need at least 32") {
		t.Errorf("short secret:\n%s", r)
	}
	// Unknown keys and a missing version are errors that name them.
	bad := filepath.Join(d, "bad.toml")
	os.WriteFile(bad, []byte("version = 1\nreplica = \"x\"\n"), 0o644)
	if r := runWant(t, 1, "--config", bad, "config", "check"); !strings.Contains(r.stderr, "unknown setting(s): replica") {
		t.Errorf("unknown key:\n%s", r)
	}
	os.WriteFile(bad, []byte("replica_id = \"x\"\n"), 0o644)
	if r := runWant(t, 1, "--config", bad, "config", "check"); !strings.Contains(r.stderr, "no version") {
		t.Errorf("no version:\n%s", r)
	}
	// -u needs a user source; a user it does not know is named.
	if r := runWant(t, 1, "--config", good, "sync", "-u", "eve", "remote:x"); !strings.Contains(r.stderr, "user eve") {
		t.Errorf("unknown local user:\n%s", r)
	}
	if r := runWant(t, 1, "--config", good, "sync", "-u", "../bob", "remote:x"); !strings.Contains(r.stderr, "../bob") {
		t.Errorf("bad user name:\n%s", r)
	}
	if r := runWant(t, 1, "--config", good, "sync", "-u", "bob", "remote:-oProxyCommand=x"); !strings.Contains(r.stderr, "bad host") {
		t.Errorf("option-like host:\n%s", r)
	}
}
