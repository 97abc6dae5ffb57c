package maildir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   string
		want Location
	}{
		{"/var/vmail/bob", Location{Root: "/var/vmail/bob"}},
		{"/var/vmail/bob/", Location{Root: "/var/vmail/bob"}},
		{"Maildir", Location{Root: filepath.Join(cwd, "Maildir")}},
		{"maildir:/m", Location{Root: "/m"}},
		{"maildir:/m:LAYOUT=fs", Location{Root: "/m", Layout: LayoutFS}},
		{"maildir:/m:LAYOUT=FS:UTF8", Location{Root: "/m", Layout: LayoutFS, UTF8: true}},
		{"maildir:/m:UTF8:LAYOUT=maildir++", Location{Root: "/m", UTF8: true}},
		{"maildir:/a::b", Location{Root: "/a:b"}},
		{"maildir:/a:::UTF8", Location{Root: "/a:", UTF8: true}},
		{"/plain:path", Location{Root: "/plain:path"}}, // no "maildir:": taken verbatim
		// Dovecot's own spelling of the UTF-8 option, and INDEX=.
		{"maildir:/m:LAYOUT=fs:UTF-8", Location{Root: "/m", Layout: LayoutFS, UTF8: true}},
		{"maildir:/m:INDEX=/var/idx/%u", Location{Root: "/m", Index: "/var/idx/%u"}},
		{"maildir:/m:INDEX=MEMORY:UTF-8", Location{Root: "/m", UTF8: true, Index: "MEMORY"}},
		{"maildir:/m:INDEX=/a::b", Location{Root: "/m", Index: "/a:b"}},
	}
	for _, tt := range tests {
		got, err := ParseLocation(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		again, err := ParseLocation(got.String())
		if err != nil || again != got {
			t.Errorf("ParseLocation(%q.String() = %q) = %+v, %v", tt.in, got.String(), again, err)
		}
	}
	for _, in := range []string{
		"", "maildir:", "~/Maildir", "maildir:~/Maildir",
		"maildir:/m:INDEX=", "maildir:/m:CONTROL=/ctl", "maildir:/m:CONTROL",
		"maildir:/m:INBOX=/var/mail/bob", "maildir:/m:VOLATILEDIR=/v", "maildir:/m:UTF-8=yes",
		"maildir:/m:LAYOUT=index", "maildir:/m:UTF8=yes",
		"maildir:/m:", "maildir:/m:utf8", "mbox:/var/mail/bob", "sdbox:/m",
	} {
		if got, err := ParseLocation(in); err == nil {
			t.Errorf("ParseLocation(%q) = %+v, want error", in, got)
		}
	}
}

func TestMailboxDir(t *testing.T) {
	pp := Location{Root: "/r"}
	ppUTF8 := Location{Root: "/r", UTF8: true}
	fsl := Location{Root: "/r", Layout: LayoutFS}
	tests := []struct {
		loc  Location
		name string
		want string
	}{
		{pp, "INBOX", "/r"},
		{pp, "inbox", "/r"},
		{fsl, "Inbox", "/r"},
		{pp, "Sent", "/r/.Sent"},
		{pp, "Archive/2024", "/r/.Archive.2024"},
		{pp, "INBOX/sub", "/r/.INBOX.sub"},
		{pp, "Entwürfe", "/r/.Entw&APw-rfe"},
		{pp, "A&B", "/r/.A&-B"},
		{pp, "with space/x", "/r/.with space.x"},
		{ppUTF8, "Entwürfe/日本語", "/r/.Entwürfe.日本語"},
		{fsl, "Archive/2024", "/r/Archive/2024"},
		{fsl, "a.b/c", "/r/a.b/c"},
		{fsl, "Entwürfe", "/r/Entw&APw-rfe"},
		{fsl, "curly/new2", "/r/curly/new2"},
		{pp, "cur", "/r/.cur"}, // fine for Maildir++: it is ".cur"
	}
	for _, tt := range tests {
		got, err := tt.loc.MailboxDir(tt.name)
		if err != nil || got != tt.want {
			t.Errorf("%v MailboxDir(%q) = %q, %v; want %q", tt.loc, tt.name, got, err, tt.want)
		}
	}

	long := strings.Repeat("a", 256)
	badTests := []struct {
		loc  Location
		name string
	}{
		{pp, ""},
		{pp, "/a"},
		{pp, "a/"},
		{pp, "/"},
		{pp, "a//b"},
		{pp, "."},
		{pp, ".."},
		{pp, "a/../b"},
		{pp, "a/./b"},
		{fsl, "../etc"},
		{pp, "a.b"},
		{pp, ".hidden"},
		{fsl, ".hidden"},
		{fsl, "a/.b"},
		{fsl, "cur"},
		{fsl, "a/new"},
		{fsl, "tmp/x"},
		{pp, "a\x00b"},
		{pp, "a\tb"},
		{pp, "a\nb"},
		{pp, "a\u0085b"}, // C1 control
		{pp, "\xff"},
		{fsl, long},
		{ppUTF8, long},
		{pp, strings.Repeat("ü", 200)}, // 270 bytes once encoded
		{pp, strings.Repeat("a", 200) + "/" + strings.Repeat("b", 60)}, // ".a…a.b…b" is 262 bytes
	}
	for _, tt := range badTests {
		got, err := tt.loc.MailboxDir(tt.name)
		if err == nil {
			t.Errorf("%v MailboxDir(%q) = %q, want error", tt.loc, tt.name, got)
			continue
		}
		var ne *NameError
		if !errors.As(err, &ne) || ne.Name != tt.name {
			t.Errorf("%v MailboxDir(%q) error %v is not a *NameError naming it", tt.loc, tt.name, err)
		}
		if !strings.Contains(err.Error(), "invalid mailbox name") {
			t.Errorf("error text %q", err.Error())
		}
	}
	if _, err := (Location{}).MailboxDir("a"); err == nil {
		t.Error("MailboxDir without a root succeeded")
	}
}

func TestNameFromDir(t *testing.T) {
	pp := Location{Root: "/r"}
	ppUTF8 := Location{Root: "/r", UTF8: true}
	fsl := Location{Root: "/r", Layout: LayoutFS}
	tests := []struct {
		loc  Location
		rel  string
		want string
	}{
		{pp, "", "INBOX"},
		{pp, ".", "INBOX"},
		{pp, ".Sent", "Sent"},
		{pp, ".Archive.2024", "Archive/2024"},
		{pp, ".Entw&APw-rfe", "Entwürfe"},
		{pp, ".A&-B", "A&B"},
		{pp, ".INBOX.sub", "INBOX/sub"},
		{ppUTF8, ".Entwürfe", "Entwürfe"},
		{ppUTF8, ".Entw&APw-rfe", "Entw&APw-rfe"},
		{fsl, "a.b/c", "a.b/c"},
		{fsl, "Entw&APw-rfe/x", "Entwürfe/x"},
	}
	for _, tt := range tests {
		got, err := tt.loc.NameFromDir(tt.rel)
		if err != nil || got != tt.want {
			t.Errorf("%v NameFromDir(%q) = %q, %v; want %q", tt.loc, tt.rel, got, err, tt.want)
		}
	}
	bad := []struct {
		loc Location
		rel string
	}{
		{pp, ".INBOX"},    // would be the root
		{pp, ".inbox"},    // likewise
		{pp, "Sent"},      // no leading dot
		{pp, ".."},        // empty levels
		{pp, ".a..b"},     // empty level
		{pp, ".a."},       // empty level
		{pp, ".a&b"},      // bad mUTF-7
		{pp, ".&AGE-"},    // non-canonical: "a" encoded
		{pp, ".Entwürfe"}, // raw UTF-8 without UTF8
		{pp, ".a/b"},
		{fsl, "a//b"},
		{fsl, "a/"},
		{fsl, "/a"},
		{fsl, "cur"},
		{fsl, "a/tmp"},
		{fsl, ".x"},
		{fsl, "../x"},
		{fsl, "INBOX"},
		{ppUTF8, ".a\x01b"},
	}
	for _, tt := range bad {
		got, err := tt.loc.NameFromDir(tt.rel)
		if err == nil {
			t.Errorf("%v NameFromDir(%q) = %q, want error", tt.loc, tt.rel, got)
			continue
		}
		var ne *NameError
		if !errors.As(err, &ne) {
			t.Errorf("%v NameFromDir(%q) error %v is not a *NameError", tt.loc, tt.rel, err)
		}
	}
}

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestListMailboxesMaildirPP(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, root, "cur", "new", "tmp",
		".Sent/cur", ".Sent/new", ".Sent/tmp",
		".Archive.2024/cur",
		".Archive/cur",
		".Entw&APw-rfe/cur",
		".nocur/new",
		".bad&/cur",   // does not decode
		".INBOX/cur",  // would be INBOX again
		"notdot/cur",  // not a Maildir++ folder
		".a..b/cur",   // empty level
		".Drafts/tmp", // no cur
	)
	writeFile(t, filepath.Join(root, ".file"), "")
	writeFile(t, filepath.Join(root, ".subscriptions.tmp0123"), "")
	if err := os.Symlink(filepath.Join(root, ".Sent"), filepath.Join(root, ".Linked")); err != nil {
		t.Fatal(err)
	}
	got, err := Location{Root: root}.ListMailboxes()
	if err != nil {
		t.Fatal(err)
	}
	want := []MailboxDir{
		{"INBOX", root},
		{"Archive", filepath.Join(root, ".Archive")},
		{"Archive/2024", filepath.Join(root, ".Archive.2024")},
		{"Entwürfe", filepath.Join(root, ".Entw&APw-rfe")},
		{"Linked", filepath.Join(root, ".Linked")}, // Dovecot follows symlinked folders too
		{"Sent", filepath.Join(root, ".Sent")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListMailboxes =\n%v\nwant\n%v", got, want)
	}

	// Without root/cur there is no INBOX.
	if err := os.RemoveAll(filepath.Join(root, "cur")); err != nil {
		t.Fatal(err)
	}
	got, err = Location{Root: root}.ListMailboxes()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want)-1 || got[0].Name != "Archive" {
		t.Errorf("ListMailboxes without INBOX = %v", got)
	}
}

func TestListMailboxesFS(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, root, "cur", "new", "tmp",
		"a/cur", "a/new", "a/tmp",
		"a/b/cur",
		"c/d/cur", // c itself is no mailbox but is walked
		".hidden/cur",
		"x/.hidden/cur",
		"tmp/y/cur", // inside INBOX's tmp/
		"a/new/z/cur",
		"Entw&APw-rfe/cur",
		"bad&/cur",
		"INBOX/cur", // would be the root
	)
	if err := os.Symlink(filepath.Join(root, "a"), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	got, err := Location{Root: root, Layout: LayoutFS}.ListMailboxes()
	if err != nil {
		t.Fatal(err)
	}
	want := []MailboxDir{
		{"INBOX", root},
		{"Entwürfe", filepath.Join(root, "Entw&APw-rfe")},
		{"a", filepath.Join(root, "a")},
		{"a/b", filepath.Join(root, "a/b")},
		{"c/d", filepath.Join(root, "c/d")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListMailboxes =\n%v\nwant\n%v", got, want)
	}
}

func TestListMailboxesMissingRoot(t *testing.T) {
	_, err := Location{Root: filepath.Join(t.TempDir(), "gone")}.ListMailboxes()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}

func TestCreateMailbox(t *testing.T) {
	root := t.TempDir()
	pp := Location{Root: root}
	dir, err := pp.CreateMailbox("Archive/2024")
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(root, ".Archive.2024") {
		t.Fatalf("dir = %s", dir)
	}
	for _, sub := range []string{"cur", "new", "tmp", "maildirfolder"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			t.Error(err)
		}
	}
	if _, err := pp.CreateMailbox("Archive/2024"); err != nil {
		t.Errorf("second CreateMailbox: %v", err)
	}
	if _, err := pp.CreateMailbox("INBOX"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "maildirfolder")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("INBOX got a maildirfolder file: %v", err)
	}
	fsl := Location{Root: root, Layout: LayoutFS}
	dir, err = fsl.CreateMailbox("x/y")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "maildirfolder")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LAYOUT=fs folder got a maildirfolder file: %v", err)
	}
	if _, err := pp.CreateMailbox("a.b"); err == nil {
		t.Error("CreateMailbox accepted an invalid name")
	}
}
