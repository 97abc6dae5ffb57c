package maildir

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// appendFixture writes a uidlist with records 1..n (header NEXTUID n+1) in
// a fresh directory and returns the directory.
func appendFixture(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	u := &Uidlist{Version: 3, UIDValidity: 1700000000, NextUID: uint32(n + 1), GUID: NewGUID()}
	for i := 1; i <= n; i++ {
		u.Records = append(u.Records, UidRecord{UID: uint32(i), FileName: "17000000" + string(rune('0'+i%10)) + ".M" + strings.Repeat("1", i) + "P1.host,S=10:2,S"})
	}
	if err := WriteUidlist(dir, u); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readRaw(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, UidlistName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An append adds records in place (same inode), leaves the header's NEXTUID
// as it was (readers raise it past the last record, as Dovecot's does), and
// a full parse reads every record.
func TestUidlistAppend(t *testing.T) {
	dir := appendFixture(t, 3)
	fi0, _ := os.Stat(filepath.Join(dir, UidlistName))
	a, err := OpenUidlistAppend(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.LastUID != 3 || a.NextUID != 4 || a.Header.NextUID != 4 || len(a.Header.Records) != 0 {
		t.Fatalf("last %d next %d header %+v", a.LastUID, a.NextUID, a.Header)
	}
	if !a.Lists("170000002.M11P1.host,S=10") || a.Lists("170000002.M1P1.host") || a.Lists("nothing") {
		t.Fatalf("Lists is wrong")
	}
	rec := UidRecord{UID: 7, FileName: "1800000000.M1P9.other,S=5:2,FS"}
	rec.Set('G', "abc")
	fi, err := a.Append([]UidRecord{{UID: 5, FileName: "1800000000.M2P9.other,S=5"}, rec})
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fi0, fi) {
		t.Fatalf("the append replaced the file")
	}
	if a.LastUID != 7 || a.NextUID != 8 {
		t.Fatalf("after: last %d next %d", a.LastUID, a.NextUID)
	}
	raw := readRaw(t, dir)
	if !bytes.HasSuffix(raw, []byte("\n5 :1800000000.M2P9.other,S=5\n7 Gabc :1800000000.M1P9.other,S=5\n")) {
		t.Fatalf("file ends %q", raw[max(0, len(raw)-120):])
	}
	if !bytes.HasPrefix(raw, []byte("3 V1700000000 N4 G")) {
		t.Fatalf("header changed: %q", raw[:40])
	}
	u, err := ParseUidlist(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Records) != 5 || u.NextUID != 8 || u.Records[4].GUID() != "abc" {
		t.Fatalf("parsed %d records, NEXTUID %d: %+v", len(u.Records), u.NextUID, u.Records)
	}
	if fi.Size() != int64(len(raw)) {
		t.Fatalf("returned size %d, file %d", fi.Size(), len(raw))
	}
}

// The mtime rises with every append, to the nanosecond, even when the old
// one lies in the future (a clock step back): Dovecot must see a change.
func TestUidlistAppendMtimeRises(t *testing.T) {
	dir := appendFixture(t, 1)
	p := filepath.Join(dir, UidlistName)
	future := time.Now().Add(time.Hour).Truncate(time.Second).Add(123)
	if err := os.Chtimes(p, time.Time{}, future); err != nil {
		t.Fatal(err)
	}
	for i, want := range []time.Time{future.Add(1), future.Add(2)} {
		a, err := OpenUidlistAppend(dir)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := a.Append([]UidRecord{{UID: uint32(2 + i), FileName: "x" + string(rune('a'+i))}})
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(want) {
			t.Fatalf("append %d: mtime %v, want %v", i, fi.ModTime(), want)
		}
	}
	// With the old mtime in the past: the current time.
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, time.Time{}, past); err != nil {
		t.Fatal(err)
	}
	a, err := OpenUidlistAppend(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	before := time.Now()
	fi, err := a.Append([]UidRecord{{UID: 9, FileName: "xz"}})
	if err != nil {
		t.Fatal(err)
	}
	if fi.ModTime().Before(before) {
		t.Fatalf("mtime %v, before the append began (%v)", fi.ModTime(), before)
	}
}

// A file whose last line has no newline (a torn or unfinished append) is
// never appended to: the record would be glued to that line, and Dovecot
// deletes a uidlist with a line it cannot parse.
func TestUidlistAppendRefusesTornEnd(t *testing.T) {
	dir := appendFixture(t, 2)
	p := filepath.Join(dir, UidlistName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("3 :1700000009.M9P"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := readRaw(t, dir)
	if _, err := OpenUidlistAppend(dir); !errors.Is(err, ErrNoAppend) {
		t.Fatalf("open of a torn file: %v, want ErrNoAppend", err)
	}
	if !bytes.Equal(readRaw(t, dir), before) {
		t.Fatalf("file changed")
	}
}

// An append that would cross a page boundary is refused with nothing
// written (a crash could then keep one page of it: half a record); so are
// records whose UIDs are not above the last one.
func TestUidlistAppendRefusals(t *testing.T) {
	dir := appendFixture(t, 2)
	p := filepath.Join(dir, UidlistName)
	// Pad the header so that the file ends 10 bytes before a page boundary.
	raw := readRaw(t, dir)
	nl := bytes.IndexByte(raw, '\n')
	pad := UidlistPage - 10 - len(raw) - 2
	padded := append(append(append([]byte{}, raw[:nl]...), (" X"+strings.Repeat("p", pad))...), raw[nl:]...)
	if err := os.WriteFile(p, padded, 0o600); err != nil {
		t.Fatal(err)
	}
	if len(padded)%UidlistPage != UidlistPage-10 {
		t.Fatalf("fixture: size %d", len(padded))
	}
	for _, tc := range []struct {
		name string
		recs []UidRecord
	}{
		{"page boundary", []UidRecord{{UID: 3, FileName: "a-name-longer-than-ten-bytes"}}},
		{"UID not above the last", []UidRecord{{UID: 2, FileName: "b"}}},
		{"UIDs not ascending", []UidRecord{{UID: 4, FileName: "c"}, {UID: 4, FileName: "d"}}},
	} {
		a, err := OpenUidlistAppend(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Append(tc.recs); !errors.Is(err, ErrNoAppend) {
			t.Errorf("%s: %v, want ErrNoAppend", tc.name, err)
		}
		a.Close()
		if !bytes.Equal(readRaw(t, dir), padded) {
			t.Fatalf("%s: the file changed", tc.name)
		}
	}
	// A short record still fits before the boundary.
	a, err := OpenUidlistAppend(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Append([]UidRecord{{UID: 3, FileName: "short"}}); err != nil {
		t.Fatalf("a 10-byte record: %v", err)
	}
	if u, err := ParseUidlist(readRaw(t, dir)); err != nil || len(u.Records) != 3 {
		t.Fatalf("after: %v %+v", err, u)
	}
}
