package transport

import (
	"context"
	"errors"
	"io"

	"github.com/twinbox-mail/twinbox/wire"
)

// ServeInProcess runs srv on one end of an in-process pipe and returns the
// other end: a local replica reached through the same protocol as a remote
// one. wait returns the server's error (nil for a peer that just went away)
// once the returned end is closed.
func ServeInProcess(ctx context.Context, srv *wire.Server) (io.ReadWriteCloser, func() error, error) {
	ce, se, err := Pipe()
	if err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ctx, se)
		se.Close()
		done <- err
	}()
	wait := func() error {
		if err := <-done; err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	}
	return ce, wait, nil
}
