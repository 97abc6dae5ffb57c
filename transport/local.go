package transport

import (
	"context"
	"log/slog"

	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/wire"
)

// ServeInProcess starts a wire server for the replica that open returns on
// one end of an in-process pipe and returns a client on the other end: a
// local replica reached through the same protocol as a remote one. wait
// returns the server's error once the client is closed.
func ServeInProcess(ctx context.Context, user string, self replica.Info, open wire.Opener, log *slog.Logger) (*wire.Client, func() error, error) {
	ce, se, err := Pipe()
	if err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		err := wire.Serve(ctx, se, open, log)
		se.Close()
		done <- err
	}()
	cl, err := wire.Dial(ctx, ce, user, self)
	if err != nil {
		ce.Close()
		serr := <-done
		if serr != nil {
			return nil, nil, serr
		}
		return nil, nil, err
	}
	return cl, func() error { return <-done }, nil
}
