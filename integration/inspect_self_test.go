package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// TestInspectorCatches shows that the checks the crash tests rely on can
// fail: each kind of damage to a clean, synced pair is reported.
func TestInspectorCatches(t *testing.T) {
	d := t.TempDir()
	a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
	c := newCorpus()
	g := newMailGen(newRand(7), "a", c)
	var bases []string
	for i := 0; i < 6; i++ {
		bases = append(bases, g.deliver(t, a, []string{"INBOX", "Work"}[i%2], g.message(2000), "S"))
	}
	syncOK(t, a, b)
	requireClean(t, c, true, a, b)

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, b string)
		want   string
	}{
		{"lost message", func(t *testing.T, b string) {
			os.Remove(findFile(boxDir(b, "INBOX"), bases[0]))
		}, "is lost"},
		{"duplicate", func(t *testing.T, b string) {
			p := findFile(boxDir(b, "Work"), bases[1])
			data, _ := os.ReadFile(p)
			os.WriteFile(filepath.Join(boxDir(b, "Work"), "new", "1.dup.host"), data, 0o600)
		}, "duplicate message"},
		{"stray tmp", func(t *testing.T, b string) {
			os.WriteFile(filepath.Join(b, "tmp", "twinbox.123"), []byte("x"), 0o600)
		}, "stray file in tmp/"},
		{"lock left", func(t *testing.T, b string) {
			os.WriteFile(filepath.Join(boxDir(b, "Work"), "dovecot-uidlist.lock"), []byte("twinbox 1 x"), 0o600)
		}, "lock file left"},
		{"UIDs not ascending", func(t *testing.T, b string) {
			// (A UID at or above the header's NEXTUID is an append, which
			// Dovecot and twinbox make: accepted.)
			p := filepath.Join(b, "dovecot-uidlist")
			data, _ := os.ReadFile(p)
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			lines[1], lines[2] = lines[2], lines[1]
			os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
		}, "not strictly ascending"},
		{"flags differ", func(t *testing.T, b string) {
			setFlags(t, b, "INBOX", bases[2], "FS")
		}, "has flags"},
		{"temporary file", func(t *testing.T, b string) {
			os.WriteFile(filepath.Join(b, ".dovecot-uidlist.tmp0123456789abcdef"), nil, 0o600)
		}, "temporary file left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := filepath.Join(t.TempDir(), "b")
			if err := dovecot.CopyTree(b, cb); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, cb)
			inv := inspect(t, cb, false)
			inv.checkCorpus(c, true)
			all := strings.Join(append(inv.problems, sameMail(inspect(t, a, false), inv)...), "\n")
			if !strings.Contains(all, tc.want) {
				t.Errorf("damage %q not reported as %q; got:\n%s", tc.name, tc.want, all)
			}
		})
	}
}
