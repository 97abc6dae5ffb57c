package maildir

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// logBytes builds one record by hand, as Dovecot lays it out.
func logBytes(typ byte, guidHex string, ts uint32) []byte {
	b := make([]byte, 24)
	b[0] = typ
	b[1], b[2], b[3] = 0xaa, 0xbb, 0xcc // padding is not looked at
	g, _ := hex.DecodeString(guidHex)
	copy(b[4:20], g)
	b[20], b[21], b[22], b[23] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	return b
}

func TestParseMailboxLog(t *testing.T) {
	const g1 = "3085f01b7f11094c501100008c4a11c1"
	const g2 = "be88b9389940ab62f7580b00ce89bbd1"
	var data []byte
	data = append(data, logBytes(1, g1, 1600000000)...)
	data = append(data, logBytes(4, g2, 1700000000)...)
	data = append(data, logBytes(9, g2, 0)...)      // unknown type: kept
	data = append(data, logBytes(3, g1, 1)[:10]...) // a writer mid-append
	got, err := ParseMailboxLog(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []LogRecord{
		{LogDeleteMailbox, guid(t, g1), time.Unix(1600000000, 0).UTC()},
		{LogSubscribe, guid(t, g2), time.Unix(1700000000, 0).UTC()},
		{LogType(9), guid(t, g2), time.Unix(0, 0).UTC()},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseMailboxLog =\n%v\nwant\n%v", got, want)
	}
	// Marshal writes the same bytes with zero padding.
	m := MarshalMailboxLog(got)
	if len(m) != 72 {
		t.Fatalf("Marshal length %d", len(m))
	}
	for i := 0; i < 3; i++ {
		r, w := data[i*24:(i+1)*24], m[i*24:(i+1)*24]
		if r[0] != w[0] || !bytes.Equal(r[4:], w[4:]) || !bytes.Equal(w[1:4], []byte{0, 0, 0}) {
			t.Errorf("record %d: %x vs %x", i, r, w)
		}
	}
	if recs, err := ParseMailboxLog(data[:23]); recs != nil || err != nil {
		t.Errorf("short data: %v, %v", recs, err)
	}
	if LogRename.String() != "rename" || LogType(42).String() != "LogType(42)" {
		t.Error("LogType.String")
	}
}

func TestMailboxLogReadAppendRotate(t *testing.T) {
	root := t.TempDir()
	recs, err := ReadMailboxLog(root)
	if recs != nil || err != nil {
		t.Fatalf("no files: %v, %v", recs, err)
	}
	g := NewGUID()
	t0 := time.Unix(1700000000, 0).UTC()
	if err := AppendMailboxLog(root, []LogRecord{{LogDeleteMailbox, g, t0}}); err != nil {
		t.Fatal(err)
	}
	// Records in .2 come first.
	writeFile(t, filepath.Join(root, MailboxLogName+".2"), string(logBytes(2, "00000000000000000000000000000001", 5)))
	recs, err = ReadMailboxLog(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Type != LogDeleteDir || recs[1] != (LogRecord{LogDeleteMailbox, g, t0}) {
		t.Fatalf("ReadMailboxLog = %v", recs)
	}
	if err := os.Remove(filepath.Join(root, MailboxLogName+".2")); err != nil {
		t.Fatal(err)
	}

	// Fill past 4 KiB: the log rotates to .2, the next append starts anew.
	many := make([]LogRecord, 170)
	for i := range many {
		many[i] = LogRecord{LogSubscribe, g, t0.Add(time.Duration(i) * time.Second)}
	}
	if err := AppendMailboxLog(root, many); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, MailboxLogName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("log not rotated: %v", err)
	}
	fi, err := os.Stat(filepath.Join(root, MailboxLogName+".2"))
	if err != nil || fi.Size() != 171*24 {
		t.Fatalf(".2: %v, %v", fi, err)
	}
	if err := AppendMailboxLog(root, []LogRecord{{LogUnsubscribe, g, t0}}); err != nil {
		t.Fatal(err)
	}
	recs, err = ReadMailboxLog(root)
	if err != nil || len(recs) != 172 || recs[171].Type != LogUnsubscribe || recs[0].Type != LogDeleteMailbox {
		t.Fatalf("after rotation: %d records, %v", len(recs), err)
	}

	for _, bad := range []LogRecord{
		{LogCreateDir, g, t0},
		{0, g, t0},
		{LogDeleteMailbox, g, time.Unix(-1, 0)},
		{LogDeleteMailbox, g, time.Unix(1<<32, 0)},
	} {
		if err := AppendMailboxLog(root, []LogRecord{bad}); err == nil {
			t.Errorf("AppendMailboxLog accepted %v", bad)
		}
	}
	if err := AppendMailboxLog(root, nil); err != nil {
		t.Error(err)
	}
}

func TestMailboxNameHash(t *testing.T) {
	// SHA-1("foo") = 0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33
	if got := MailboxNameHash("foo"); hex.EncodeToString(got[:]) != "0beec7b5ea3f0fdbc95d0dd47f3c5bc2" {
		t.Errorf("MailboxNameHash = %x", got)
	}
}
