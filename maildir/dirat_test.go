package maildir

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// Listing a Maildir++ root looks up each folder's cur/ relative to the open
// root: the folders and hidden mailboxes found are those that looking each
// path up from / finds (a symbolic link to a folder elsewhere, a dangling
// one, cur/ a file or a link to a directory, a hidden mailbox with and
// without cur/ included).
func TestListMaildirPPRelativeLookups(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "mail")
	for _, d := range []string{"", ".a", ".a.b", ".nocur/new", HiddenPrefix + "0123", HiddenPrefix + "4567/new", "elsewhere/cur", "curdir"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, d, "cur"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.RemoveAll(filepath.Join(root, ".nocur", "cur"))
	os.RemoveAll(filepath.Join(root, HiddenPrefix+"4567", "cur"))
	if err := os.MkdirAll(filepath.Join(root, ".curfile"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ".curfile", "cur"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, ".curlink"), 0o700); err != nil {
		t.Fatal(err)
	}
	for link, to := range map[string]string{".linked": filepath.Join(root, "elsewhere"), ".dangling": filepath.Join(base, "nowhere"), ".curlink/cur": filepath.Join(root, "curdir")} {
		if err := os.Symlink(to, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	l := Location{Root: root, Layout: LayoutMaildirPP}
	dirs, hidden, err := l.ListMailboxesAndHidden()
	if err != nil {
		t.Fatal(err)
	}
	// The same by path from /.
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]MailboxDir{{Name: Inbox, Dir: root}}, l.listMaildirPP(dirIn{path: root}, ents)...)
	wantHidden := hiddenIn(dirIn{path: root}, ents)
	if !reflect.DeepEqual(dirs, want) || !reflect.DeepEqual(hidden, wantHidden) {
		t.Errorf("listed %v hidden %v, by path %v hidden %v", dirs, hidden, want, wantHidden)
	}
	var names []string
	for _, d := range dirs {
		names = append(names, d.Name)
	}
	if w := []string{Inbox, "a", "a/b", "curlink", "linked"}; !reflect.DeepEqual(names, w) {
		t.Errorf("names %v, want %v", names, w)
	}
	if len(hidden) != 1 || hidden[0].Name != HiddenPrefix+"0123" {
		t.Errorf("hidden %v, want only %s0123", hidden, HiddenPrefix)
	}
}
