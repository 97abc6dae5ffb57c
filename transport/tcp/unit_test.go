package tcp

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMatchUser(t *testing.T) {
	for _, c := range []struct {
		p, u string
		ok   bool
	}{
		{"*", "bob", true},
		{"*", "", true},
		{"bob", "bob", true},
		{"bob", "bobby", false},
		{"bob*", "bobby", true},
		{"*@example.org", "bob@example.org", true},
		{"*@example.org", "bob@example.org.evil", false},
		{"?ob", "bob", true},
		{"?ob", "ob", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"*a*a*a*a*a*a*b", strings.Repeat("a", 200), false},
		{"j?rg", "jörg", true},
		{"[ab]", "a", false},
		{"[ab]", "[ab]", true},
	} {
		if got := MatchUser(c.p, c.u); got != c.ok {
			t.Errorf("MatchUser(%q, %q) = %v", c.p, c.u, got)
		}
	}
}

func TestValidUser(t *testing.T) {
	for _, u := range []string{"bob", "bob@example.org", "jörg", "a.b", "a-b", "a+tag", strings.Repeat("x", 255)} {
		if err := ValidUser(u); err != nil {
			t.Errorf("ValidUser(%q): %v", u, err)
		}
	}
	for _, u := range []string{"", "..", "a/../b", "/etc", "a/b", "-x", "a b", "a\tb", "a\x00", "a\x1b[31m", "a\u0085b", "a\u2028", "\xff", strings.Repeat("x", 256)} {
		if err := ValidUser(u); err == nil {
			t.Errorf("ValidUser(%q) passed", u)
		}
	}
}

func TestParseKey(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, 32)
	for _, text := range []string{
		"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
		"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc",
		"  BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\r\n",
	} {
		k, err := ParseKey([]byte(text))
		if err != nil || !bytes.Equal(k, raw) {
			t.Errorf("ParseKey(%q) = %x, %v", text, k, err)
		}
	}
	for text, want := range map[string]string{
		"":                     "empty",
		"c2hvcnQ=":             "decodes to 5 bytes",
		"not base64 at all!!!": "one line",
		"@@@@":                 "not base64",
		"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\nBwcH": "one line",
	} {
		_, err := ParseKey([]byte(text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%q): %v, want %q", text, err, want)
		}
	}
}

func TestReadKeyFile(t *testing.T) {
	d := t.TempDir()
	f := filepath.Join(d, "mx1.key")
	os.WriteFile(f, []byte("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"), 0o600)
	if k, err := ReadKeyFile(f); err != nil || len(k) != 32 {
		t.Fatalf("ReadKeyFile: %x %v", k, err)
	}
	os.Chmod(f, 0o640)
	if _, err := ReadKeyFile(f); err != nil {
		t.Errorf("mode 0640: %v", err)
	}
	os.Chmod(f, 0o644)
	if _, err := ReadKeyFile(f); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("mode 0644: %v", err)
	}
	os.Chmod(f, 0o660)
	if _, err := ReadKeyFile(f); err == nil {
		t.Errorf("mode 0660 accepted")
	}
	big := filepath.Join(d, "big")
	os.WriteFile(big, bytes.Repeat([]byte("A"), 5000), 0o600)
	if _, err := ReadKeyFile(big); err == nil || !strings.Contains(err.Error(), "4 KiB") {
		t.Errorf("big file: %v", err)
	}
	if _, err := ReadKeyFile(d); err == nil {
		t.Errorf("a directory accepted")
	}
}

func TestSplitAddr(t *testing.T) {
	for in, want := range map[string]struct {
		host string
		port int
	}{
		"mx2":                  {"mx2", DefaultPort},
		"mx2:9000":             {"mx2", 9000},
		"10.0.0.1":             {"10.0.0.1", DefaultPort},
		"[2001:db8::1]:9000":   {"2001:db8::1", 9000},
		"[2001:db8::1]":        {"2001:db8::1", DefaultPort},
		"2001:db8::1":          {"2001:db8::1", DefaultPort},
		"mail.example.org:443": {"mail.example.org", 443},
	} {
		h, p, err := SplitAddr(in)
		if err != nil || h != want.host || p != want.port {
			t.Errorf("SplitAddr(%q) = %q %d %v", in, h, p, err)
		}
	}
	for _, in := range []string{"", ":9000", "mx2:0", "mx2:70000", "mx2:x", "mx2:9000:1", "[mx2"} {
		if _, _, err := SplitAddr(in); err == nil {
			t.Errorf("SplitAddr(%q) passed", in)
		}
	}
}

// Every field of the transcript changes it.
func TestTranscriptBinding(t *testing.T) {
	base := transcript{mode: modeTCP, name: "mx1", user: "bob", nc: bytes.Repeat([]byte{1}, 32), ns: bytes.Repeat([]byte{2}, 32),
		pc: bytes.Repeat([]byte{3}, 32), ps: bytes.Repeat([]byte{4}, 32)}
	h0 := base.hash()
	edits := []func(*transcript){
		func(t *transcript) { t.mode = modeTLS },
		func(t *transcript) { t.name = "mx2" },
		func(t *transcript) { t.user = "bob2" },
		func(t *transcript) { t.name, t.user = "mx1b", "ob" }, // shifted boundary
		func(t *transcript) { t.nc = bytes.Repeat([]byte{9}, 32) },
		func(t *transcript) { t.ns = bytes.Repeat([]byte{9}, 32) },
		func(t *transcript) { t.pc = bytes.Repeat([]byte{9}, 32) },
		func(t *transcript) { t.ps = bytes.Repeat([]byte{9}, 32) },
		func(t *transcript) { t.exporter = []byte{1} },
	}
	for i, e := range edits {
		tr := base
		e(&tr)
		if bytes.Equal(tr.hash(), h0) {
			t.Errorf("edit %d does not change the transcript", i)
		}
	}
	if bytes.Equal(proof(keyA, labelClient, h0), proof(keyA, labelServer, h0)) {
		t.Error("client and server proofs are equal: a reflected proof would pass")
	}
}

// pipeRW is an in-memory byte stream for the record layer.
type pipeRW struct {
	bytes.Buffer
	closed bool
}

func (p *pipeRW) Close() error { p.closed = true; return nil }

func recordPair() (w, r *recordConn, wire *pipeRW) {
	wire = &pipeRW{}
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	return newRecordConn(wire, k2, k1), newRecordConn(wire, k1, k2), wire
}

func TestRecordRoundTrip(t *testing.T) {
	w, r, wire := recordPair()
	var want []byte
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 50; i++ {
		b := make([]byte, rng.IntN(3*MaxRecord))
		rand.Read(b)
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	w.Close()
	if !wire.closed {
		t.Error("Close did not close the connection")
	}
	if bytes.Contains(wire.Bytes(), want[1000:1064]) {
		t.Error("plaintext visible on the wire")
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("write after Close")
	}
}

// splitRecords cuts a record stream into its records.
func splitRecords(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= hdrLen {
		n := hdrLen + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func TestRecordAttacks(t *testing.T) {
	w, _, wire := recordPair()
	for _, s := range []string{"one", "two", "three"} {
		w.Write([]byte(s))
	}
	w.CloseWrite()
	recs := splitRecords(wire.Bytes())
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	join := func(rs ...[]byte) []byte { return bytes.Join(rs, nil) }
	flip := func(r []byte, i int) []byte { c := bytes.Clone(r); c[i] ^= 1; return c }
	for name, c := range map[string]struct {
		stream []byte
		want   error
		got    string
	}{
		"intact":           {join(recs...), nil, "onetwothree"},
		"reordered":        {join(recs[0], recs[2], recs[1], recs[3]), ErrAuth, "one"},
		"dropped":          {join(recs[0], recs[2], recs[3]), ErrAuth, "one"},
		"repeated":         {join(recs[0], recs[0], recs[1]), ErrAuth, "one"},
		"truncated at end": {join(recs[:3]...), ErrTruncated, "onetwothree"},
		"truncated inside": {join(recs[0], recs[1][:10]), ErrTruncated, "one"},
		"early close":      {join(recs[0], recs[3]), ErrAuth, "one"},
		"flipped body":     {join(recs[0], flip(recs[1], 6), recs[2]), ErrAuth, "one"},
		"flipped type":     {join(recs[0], flip(recs[1], 0), recs[2]), ErrProtocol, "one"},
		"type as close":    {join(recs[0], append([]byte{recClose}, recs[1][1:]...)), ErrProtocol, "one"},
		"length changed":   {join(recs[0], flip(recs[1], 3), recs[2]), ErrAuth, "one"},
		"zero length":      {join(recs[0], []byte{recData, 0, 0, 0}), ErrProtocol, "one"},
		"oversized":        {join(recs[0], []byte{recData, 0xff, 0xff, 0xff}), ErrProtocol, "one"},
		"empty":            {nil, ErrTruncated, ""},
	} {
		_, r, _ := recordPair()
		r.conn = &pipeRW{Buffer: *bytes.NewBuffer(c.stream)}
		got, err := io.ReadAll(r)
		if string(got) != c.got {
			t.Errorf("%s: read %q, want %q", name, got, c.got)
		}
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", name, err, c.want)
		}
	}
	// A side's own records sent back to it (reflection) do not open: the
	// directions have different keys.
	ww, _, wire2 := recordPair()
	ww.Write([]byte("hello"))
	ww.conn = &pipeRW{Buffer: *bytes.NewBuffer(wire2.Bytes())}
	if _, err := io.ReadAll(ww); !errors.Is(err, ErrAuth) {
		t.Errorf("reflected record: %v", err)
	}
}

// After a failed record the reader sends an alert, which the other side
// reads as the cause.
func TestRecordAlert(t *testing.T) {
	a2b := &pipeRW{}
	b2a := &pipeRW{}
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	a := newRecordConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{b2a, a2b, a2b}, k2, k1)
	b := newRecordConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{a2b, b2a, b2a}, k1, k2)
	a.Write([]byte("hello"))
	a2b.Bytes()[6] ^= 1
	if _, err := io.ReadAll(b); !errors.Is(err, ErrAuth) {
		t.Fatalf("b read %v", err)
	}
	_, err := io.ReadAll(a)
	if !errors.Is(err, ErrPeerAlert) || !strings.Contains(err.Error(), "record 0: tcp record failed authentication") {
		t.Fatalf("a read %v", err)
	}
	if _, err := b.Write([]byte("more")); err == nil {
		t.Error("b writes after its alert")
	}
}
