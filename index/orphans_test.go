package index

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// removeOrphanTemps (run each time a mailbox is locked) removes exactly the
// temporary files a killed twinbox's atomic writes and dotlocks leave, with
// one read of the directory.
func TestRemoveOrphanTemps(t *testing.T) {
	d := t.TempDir()
	orphans := []string{".dovecot-uidlist.tmp1a2b", ".dovecot-keywords.tmp", "dovecot-uidlist.lock.tmpXY", ".subscriptions.tmp9", "subscriptions.lock.tmp"}
	keep := []string{"dovecot-uidlist", "dovecot-keywords", "dovecot-uidlist.lock", ".dovecot-uidlist", "x.dovecot-uidlist.tmp1", "subscriptions", "dovecot.index.log", "twinbox.db"}
	for _, n := range append(append([]string(nil), orphans...), keep...) {
		if err := os.WriteFile(filepath.Join(d, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(d, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	removeOrphanTemps(d)
	ents, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		if !e.IsDir() {
			got = append(got, e.Name())
		}
	}
	want := append([]string(nil), keep...)
	sort.Strings(want)
	sort.Strings(got)
	if len(got) != len(want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("left %v, want %v", got, want)
		}
	}
	removeOrphanTemps(filepath.Join(d, "gone")) // a missing directory: nothing to do
}
