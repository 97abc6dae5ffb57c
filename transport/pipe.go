// Package transport provides the ways to reach a peer's sync server. Each
// yields an io.ReadWriteCloser that the wire protocol runs over: the
// in-process pipe (local-to-local syncs), the command transport (a peer
// reached through a program's stdin/stdout: exec:, and OpenSSH's `ssh host
// twinbox serve` for remote:), and the built-in SSH client (ssh://).
// tcp: and tcps: are in the subpackage tcp.
package transport

import (
	"io"
	"os"
)

// pipeEnd is one end of a duplex pipe made of two OS pipes (kernel
// buffered, so large body streams do not ping-pong).
type pipeEnd struct {
	r *os.File
	w *os.File
}

func (p *pipeEnd) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeEnd) Write(b []byte) (int, error) { return p.w.Write(b) }

// Close closes both directions of this end.
func (p *pipeEnd) Close() error {
	err1 := p.w.Close()
	err2 := p.r.Close()
	if err1 != nil {
		return err1
	}
	return err2
}

// Pipe returns the two ends of an in-process duplex stream.
func Pipe() (io.ReadWriteCloser, io.ReadWriteCloser, error) {
	ar, bw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	br, aw, err := os.Pipe()
	if err != nil {
		ar.Close()
		bw.Close()
		return nil, nil, err
	}
	return &pipeEnd{r: ar, w: aw}, &pipeEnd{r: br, w: bw}, nil
}
