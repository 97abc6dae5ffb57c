package tcp

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// BenchmarkLoopback compares a TCP loopback copy with the same copy
// through the tcp: record layer (AES-256-GCM), in 256 KiB writes (the
// sync protocol's body chunks). Run: go test -run '^$' -bench Loopback
// -count=5 ./transport/tcp
func BenchmarkLoopback(b *testing.B) {
	b.Run("raw", func(b *testing.B) { benchLoopback(b, false) })
	b.Run("record", func(b *testing.B) { benchLoopback(b, true) })
}

func benchLoopback(b *testing.B, record bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server := <-accepted
	defer server.Close()
	var w io.WriteCloser = client
	var r io.Reader = server
	if record {
		k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
		w = newRecordConn(client, k2, k1)
		r = newRecordConn(server, k1, k2)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		done <- err
	}()
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
