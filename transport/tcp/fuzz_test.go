package tcp

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func fuzzServerConfig() *serverConfig {
	return &serverConfig{
		mode: modeTCP,
		secrets: map[string]*Secret{
			"mx1": {Name: "mx1", Key: keyA, Users: []string{"carol", "*@example.org"}},
			"mx2": {Name: "mx2", Key: keyB, Users: []string{"?ob"}},
		},
		dummy: bytes.Repeat([]byte{0xdd}, 32),
	}
}

// fuzzC1 is a well-formed client hello.
func fuzzC1(mode byte, name, user string) []byte {
	share, _ := ecdh.X25519().GenerateKey(rand.Reader)
	b := append([]byte(magic), hsVersion, mode, byte(len(name)))
	b = append(b, name...)
	b = append(b, byte(len(user)))
	b = append(b, user...)
	b = append(b, bytes.Repeat([]byte{0x11}, nonceLen)...)
	return append(b, share.PublicKey().Bytes()...)
}

func handshakeSeeds() [][]byte {
	hello := fuzzC1(modeTCP, "mx1", "carol")
	return [][]byte{
		hello,
		append(bytes.Clone(hello), bytes.Repeat([]byte{0x42}, proofLen)...),
		fuzzC1(modeTCP, "mx2", "bob"),
		fuzzC1(modeTLS, "mx1", "carol"),
		fuzzC1(modeTCP, "nosuch", "carol"),
		fuzzC1(modeTCP, "mx1", "../etc"),
		fuzzC1(modeTCP, "mx1", "dave@example.org"),
		append(append([]byte(magic), hsVersion, modeTCP, 200), bytes.Repeat([]byte("n"), 200)...),
		append([]byte(magic), 2),
		hello[:20],
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0x16, 3, 1, 0, 100},
		{},
	}
}

// The server's side of the handshake fed arbitrary client bytes: it never
// panics, reads at most maxHandshake bytes, writes a bounded answer, and
// never accepts (a proof that does not depend on the server's fresh nonce
// cannot be right: this is the replay property).
func FuzzServerHandshake(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s)
	}
	cfg := fuzzServerConfig()
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.NewReader(data)
		var out bytes.Buffer
		info, err := serverHandshake(struct {
			io.Reader
			io.Writer
		}{in, &out}, cfg, nil, rand.Reader)
		if err == nil {
			t.Fatalf("accepted %q as user %q", data, info.user)
		}
		if read := len(data) - in.Len(); read > maxHandshake {
			t.Fatalf("read %d bytes", read)
		}
		if out.Len() > len(magic)+2+nonceLen+shareLen+1+2+maxErrLen {
			t.Fatalf("wrote %d bytes", out.Len())
		}
	})
}

// provingClient plays a client whose hello is the fuzzer's bytes and who
// holds the key of the secret it names (if the server has it): once the
// server has answered the hello, it sends the right proof.
type provingClient struct {
	c1     []byte
	off    int
	out    bytes.Buffer // what the server wrote
	proof  []byte
	parsed *transcript
	key    []byte
}

func (p *provingClient) Write(b []byte) (int, error) { return p.out.Write(b) }

func (p *provingClient) Read(b []byte) (int, error) {
	if p.off < len(p.c1) {
		n := copy(b, p.c1[p.off:])
		p.off += n
		return n, nil
	}
	if p.proof == nil {
		s1 := p.out.Bytes()
		if p.parsed == nil || len(s1) != len(magic)+2+nonceLen+shareLen || s1[len(magic)+1] != statusOK {
			return 0, io.EOF
		}
		t := *p.parsed
		t.ns = s1[len(magic)+2 : len(magic)+2+nonceLen]
		t.ps = s1[len(magic)+2+nonceLen:]
		p.proof = proof(p.key, labelClient, t.hash())
	}
	if len(p.proof) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.proof)
	p.proof = p.proof[n:]
	if len(p.proof) == 0 {
		p.proof = []byte{}
	}
	return n, nil
}

// parseC1 parses a whole client hello (and nothing after it).
func parseC1(b []byte) (*transcript, bool) {
	if len(b) < len(magic)+3 || string(b[:len(magic)]) != magic || b[len(magic)] != hsVersion {
		return nil, false
	}
	t := &transcript{mode: b[len(magic)+1]}
	b = b[len(magic)+2:]
	n := int(b[0])
	if len(b) < 1+n+1 {
		return nil, false
	}
	t.name = string(b[1 : 1+n])
	b = b[1+n:]
	n = int(b[0])
	if len(b) != 1+n+nonceLen+shareLen {
		return nil, false
	}
	t.user = string(b[1 : 1+n])
	b = b[1+n:]
	t.nc, t.pc = b[:nonceLen], b[nonceLen:]
	return t, true
}

// The server's side of the handshake with a client that proves it holds
// the key: it accepts exactly when the hello is well formed, the mode is
// the listener's, the user name valid, the secret known and its patterns
// allow the user, and the X25519 share is usable.
func FuzzServerHandshakeProved(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s)
	}
	cfg := fuzzServerConfig()
	probe, _ := ecdh.X25519().GenerateKey(rand.Reader)
	f.Fuzz(func(t *testing.T, c1 []byte) {
		pc := &provingClient{c1: c1}
		pc.parsed, _ = parseC1(c1)
		sec := (*Secret)(nil)
		if pc.parsed != nil {
			sec = cfg.secrets[pc.parsed.name]
		}
		pc.key = cfg.dummy
		if sec != nil {
			pc.key = sec.Key
		}
		info, err := serverHandshake(pc, cfg, nil, rand.Reader)
		want := pc.parsed != nil && pc.parsed.mode == modeTCP && pc.parsed.user != "" &&
			ValidUser(pc.parsed.user) == nil && sec != nil && sec.Allows(pc.parsed.user)
		if want {
			pub, perr := ecdh.X25519().NewPublicKey(pc.parsed.pc)
			if perr == nil {
				_, perr = probe.ECDH(pub)
			}
			want = perr == nil
		}
		if (err == nil) != want {
			t.Fatalf("hello %q: accepted %v (%v), want %v", c1, err == nil, err, want)
		}
		if err == nil && (info.user != pc.parsed.user || info.keys == nil) {
			t.Fatalf("accepted as %q, keys %v", info.user, info.keys != nil)
		}
	})
}

// recordFuzzPlain is the plaintext of the only valid record stream the
// record fuzzer can hold (its keys are fixed): any bytes a reader returns
// must be a prefix of it.
var recordFuzzPlain = func() [][]byte {
	var out [][]byte
	for i, n := range []int{5, 0, 300, 2000, 17} {
		out = append(out, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	return out
}()

func recordFuzzKeys() (read, write []byte) {
	k := sha256.Sum256([]byte("record fuzz"))
	return k[:], k[:]
}

func recordSeeds() [][]byte {
	rk, wk := recordFuzzKeys()
	var buf pipeRW
	w := newRecordConn(&buf, rk, wk)
	for _, p := range recordFuzzPlain {
		if len(p) > 0 {
			w.Write(p)
		}
	}
	w.CloseWrite()
	all := bytes.Clone(buf.Bytes())
	recs := splitRecords(all)
	flipped := bytes.Clone(all)
	flipped[10] ^= 4
	return [][]byte{
		all,
		all[:len(all)-1],
		recs[0],
		bytes.Join([][]byte{recs[1], recs[0]}, nil),
		flipped,
		{recData, 0xff, 0xff, 0xff},
		{recAlert, 0, 0, 16},
		{},
	}
}

// The record reader fed arbitrary bytes never panics and returns only
// authentic plaintext, in order.
func FuzzRecordReader(f *testing.F) {
	for _, s := range recordSeeds() {
		f.Add(s)
	}
	want := bytes.Join(recordFuzzPlain, nil)
	rk, wk := recordFuzzKeys()
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newRecordConn(&pipeRW{Buffer: *bytes.NewBuffer(data)}, rk, wk)
		got, err := io.ReadAll(r)
		if !bytes.HasPrefix(want, got) {
			t.Fatalf("read %d bytes that are not the authentic stream", len(got))
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("clean end after %d of %d bytes", len(got), len(want))
		}
	})
}

// TestWriteFuzzCorpus writes the seeds into testdata/fuzz (run with
// TWINBOX_WRITE_FUZZ_CORPUS=1 after changing them).
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("TWINBOX_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set TWINBOX_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz")
	}
	for target, seeds := range map[string][][]byte{
		"FuzzServerHandshake":       handshakeSeeds(),
		"FuzzServerHandshakeProved": handshakeSeeds(),
		"FuzzRecordReader":          recordSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			text := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
