package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestParseSubscriptions(t *testing.T) {
	tests := []struct {
		name string
		in   string
		sep  byte
		want []string
	}{
		{"empty", "", '.', nil},
		{"v2 header only", "V\t2\n\n", '.', nil},
		{
			"v2",
			"V\t2\n\nINBOX\nArchive\t2024\nEntw&APw-rfe\nwith space\ta.b\n",
			'.',
			[]string{"INBOX", "Archive/2024", "Entw&APw-rfe", "with space/a.b"},
		},
		{
			"v2 escapes",
			"V\t2\n\na\x01xb\x01\nc\x01t\n\x011\n",
			'.',
			[]string{"axb"}, // the TAB and \001 names are control characters: skipped
		},
		{
			"v1 Maildir++ (older Dovecot)",
			"INBOX\nSent\nArchive.2024\nArchive.\n",
			'.',
			[]string{"INBOX", "Sent", "Archive/2024", "Archive"},
		},
		{"v1 LAYOUT=fs", "a.b/c\nd/\n", '/', []string{"a.b/c", "d"}},
		{"v1 treats a.b as one level with /", "a.b\n", '/', []string{"a.b"}},
		{"partial last line counts, CRLF", "INBOX\r\nSent", '.', []string{"INBOX", "Sent"}},
		{"inbox normalised, duplicates once", "inbox\nINBOX\nSent\nSent\n", '.', []string{"INBOX", "Sent"}},
		{"invalid entries skipped", "\n.\n..\na..b\n.x\nok\n\xff\n", '.', []string{"ok"}},
		// Without the empty line it is a v1 file whose "V\t2" entry is invalid.
		{"not quite a v2 header", "V\t2\nINBOX\n", '.', []string{"INBOX"}},
	}
	for _, tt := range tests {
		got, err := ParseSubscriptionsSep([]byte(tt.in), tt.sep)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	if got, _ := ParseSubscriptions([]byte("a.b\n")); !reflect.DeepEqual(got, []string{"a/b"}) {
		t.Errorf("ParseSubscriptions uses %q", got)
	}
	if _, err := ParseSubscriptions([]byte("a\x00\n")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NUL: %v", err)
	}
}

func TestMarshalSubscriptions(t *testing.T) {
	got := string(MarshalSubscriptions([]string{"inbox", "Archive/2024", "Sent", "Sent", "bad//name", "a.b"}))
	want := "V\t2\n\nINBOX\nArchive\t2024\nSent\na.b\n"
	if got != want {
		t.Errorf("MarshalSubscriptions = %q, want %q", got, want)
	}
	names, _ := ParseSubscriptions([]byte(got))
	if !reflect.DeepEqual(names, []string{"INBOX", "Archive/2024", "Sent", "a.b"}) {
		t.Errorf("round trip = %q", names)
	}
	if s := tabEscape("a\x00\x01\t\r\nb"); s != "a\x010\x011\x01t\x01r\x01nb" {
		t.Errorf("tabEscape = %q", s)
	}
	if s := tabUnescape(tabEscape("a\x00\x01\t\r\nb")); s != "a\x00\x01\t\r\nb" {
		t.Errorf("tabUnescape = %q", s)
	}
}

func TestReadWriteSubscriptions(t *testing.T) {
	root := t.TempDir()
	names, fi, err := ReadSubscriptions(root)
	if names != nil || fi != nil || err != nil {
		t.Fatalf("missing file: %v %v %v", names, fi, err)
	}
	if err := WriteSubscriptions(root, []string{"INBOX", "a/b"}); err != nil {
		t.Fatal(err)
	}
	names, fi1, err := ReadSubscriptions(root)
	if err != nil || !reflect.DeepEqual(names, []string{"INBOX", "a/b"}) {
		t.Fatalf("ReadSubscriptions = %q, %v", names, err)
	}
	if err := WriteSubscriptions(root, []string{"a//b"}); err == nil {
		t.Error("WriteSubscriptions accepted an invalid name")
	}
	if err := WriteSubscriptions(root, nil); err != nil {
		t.Fatal(err)
	}
	names, fi2, _ := ReadSubscriptions(root)
	if len(names) != 0 || fi2.ModTime().Unix() <= fi1.ModTime().Unix() {
		t.Errorf("after emptying: %q, mtime %v then %v", names, fi1.ModTime(), fi2.ModTime())
	}
}

func TestLocationSubscriptions(t *testing.T) {
	root := t.TempDir()
	loc := Location{Root: root}
	if err := loc.WriteSubscriptions([]string{"INBOX", "Entwürfe/Sub", "A&B"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(root, SubscriptionsName))
	if string(data) != "V\t2\n\nINBOX\nEntw&APw-rfe\tSub\nA&-B\n" {
		t.Errorf("file = %q", data)
	}
	names, _, err := loc.ReadSubscriptions()
	if err != nil || !reflect.DeepEqual(names, []string{"INBOX", "Entwürfe/Sub", "A&B"}) {
		t.Errorf("ReadSubscriptions = %q, %v", names, err)
	}

	// A v1 file from Dovecot with LAYOUT=fs, with one undecodable entry.
	writeFile(t, filepath.Join(root, SubscriptionsName), "Entw&APw-rfe/a.b\nbad&\nINBOX\n")
	fsl := Location{Root: root, Layout: LayoutFS}
	names, _, err = fsl.ReadSubscriptions()
	if err != nil || !reflect.DeepEqual(names, []string{"Entwürfe/a.b", "INBOX"}) {
		t.Errorf("fs ReadSubscriptions = %q, %v", names, err)
	}

	utf := Location{Root: root, UTF8: true}
	if err := utf.WriteSubscriptions([]string{"Entwürfe"}); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(filepath.Join(root, SubscriptionsName))
	if string(data) != "V\t2\n\nEntwürfe\n" {
		t.Errorf("UTF8 file = %q", data)
	}
	if err := loc.WriteSubscriptions([]string{"a\tb"}); err == nil {
		t.Error("Location.WriteSubscriptions accepted a control character")
	}
}

func TestLockSubscriptions(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	d, err := LockSubscriptions(ctx, root, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d.Path() != filepath.Join(root, "subscriptions.lock") {
		t.Errorf("lock path %s", d.Path())
	}
	if _, err := LockSubscriptions(ctx, root, 0); !errors.Is(err, ErrLockTimeout) {
		t.Errorf("second lock: %v", err)
	}
	if err := d.Unlock(); err != nil {
		t.Fatal(err)
	}
	// Stale after 30 s, not 120 s.
	lock := filepath.Join(root, "subscriptions.lock")
	writeFile(t, lock, "")
	old := time.Now().Add(-31 * time.Second)
	if err := os.Chtimes(lock, old, old); err != nil {
		t.Fatal(err)
	}
	d, err = LockSubscriptions(ctx, root, time.Second)
	if err != nil {
		t.Fatalf("stale subscriptions lock not taken over: %v", err)
	}
	_ = d.Unlock()
}
