package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/twinbox-mail/twinbox/sshd"
)

// SshdCmd is `twinbox sshd`: the embedded SSH server.
type SshdCmd struct {
	Listen           string        `help:"Address to listen on (default [sshd] listen, else :2222)." placeholder:"ADDR"`
	HostKey          string        `name:"host-key" help:"Host key file, created (ed25519, mode 0600) at first start (default [sshd] host_key, else /etc/twinbox/ssh_host_ed25519_key)." placeholder:"FILE"`
	AuthorizedKeys   string        `name:"authorized-keys" help:"Authorized keys, with users= and from= options (default [sshd] authorized_keys, else /etc/twinbox/authorized_keys)." placeholder:"FILE"`
	HandshakeTimeout time.Duration `name:"handshake-timeout" help:"From connect to an accepted sync request (default [sshd] handshake_timeout, else 30s)."`
	IdleTimeout      time.Duration `name:"idle-timeout" help:"End a session when no byte moved for this long (default [sshd] idle_timeout, else 10m)."`
	MaxSession       time.Duration `name:"max-session" help:"End a connection after this long (default [sshd] max_session, else 12h)."`
}

func (c *SshdCmd) Run(g *globals) error {
	cfg, err := g.config()
	if err != nil {
		return err
	}
	pick := func(flag, conf string) string {
		if flag != "" {
			return flag
		}
		return conf
	}
	pickD := func(flag, conf time.Duration) time.Duration {
		if flag != 0 {
			return flag
		}
		return conf
	}
	// A daemon logs every accept and refusal, -v or not.
	log := g.log
	if !g.verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := sshd.New(sshd.Config{
		Addr:               pick(c.Listen, cfg.SSHD.Listen),
		HostKeyPath:        pick(c.HostKey, cfg.SSHD.HostKey),
		AuthorizedKeysPath: pick(c.AuthorizedKeys, cfg.SSHD.AuthorizedKeys),
		HandshakeTimeout:   pickD(c.HandshakeTimeout, cfg.SSHD.HandshakeTimeout.Duration),
		IdleTimeout:        pickD(c.IdleTimeout, cfg.SSHD.IdleTimeout.Duration),
		MaxSessionTime:     pickD(c.MaxSession, cfg.SSHD.MaxSession.Duration),
		Log:                log,
		Serve: func(ctx context.Context, user string, rw io.ReadWriter) error {
			return g.serveChild(ctx, user, rw)
		},
	})
	if err != nil {
		return err
	}
	return srv.ListenAndServe(g.ctx)
}
