package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"

	"github.com/twinbox-mail/twinbox/transport/tcp"
)

// ListenCmd is `twinbox listen`: the tcp: and tcps: listeners.
type ListenCmd struct {
	TCP  string `help:"Address of the tcp: listener (default [listen] tcp)." placeholder:"ADDR"`
	TCPS string `help:"Address of the tcps: listener (default [listen] tcps)." placeholder:"ADDR"`
}

func (c *ListenCmd) Run(g *globals) error {
	cfg, err := g.config()
	if err != nil {
		return err
	}
	addrTCP, addrTCPS := cfg.Listen.TCP, cfg.Listen.TCPS
	if c.TCP != "" {
		addrTCP = c.TCP
	}
	if c.TCPS != "" {
		addrTCPS = c.TCPS
	}
	if addrTCP == "" && addrTCPS == "" {
		return errors.New("listen: no address: set [listen] tcp and/or tcps in twinbox.toml, or --tcp/--tcps")
	}
	if len(cfg.Listen.Secrets) == 0 {
		return errors.New("listen: no [[listen.secret]] in twinbox.toml: the listener needs at least one shared secret")
	}
	var secrets []tcp.Secret
	for _, s := range cfg.Listen.Secrets {
		key, err := tcp.ReadKeyFile(s.File)
		if err != nil {
			return fmt.Errorf("listen.secret %q: %w", s.Name, err)
		}
		secrets = append(secrets, tcp.Secret{Name: s.Name, Key: key, Users: s.Users})
	}
	log := g.log
	if !g.verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	handle := func(ctx context.Context, user string, rw io.ReadWriter) error {
		return g.serveChild(ctx, user, rw)
	}
	type one struct {
		kind, addr string
		l          *tcp.Listener
	}
	var ls []one
	if addrTCP != "" {
		ls = append(ls, one{"tcp", withPort(addrTCP), &tcp.Listener{Secrets: secrets}})
	}
	if addrTCPS != "" {
		if cfg.Listen.CertFile == "" || cfg.Listen.KeyFile == "" {
			return errors.New("listen: tcps needs [listen] cert_file and key_file")
		}
		tc, err := tcp.ServerTLS(cfg.Listen.CertFile, cfg.Listen.KeyFile, cfg.Listen.ClientCAFile)
		if err != nil {
			return err
		}
		ls = append(ls, one{"tcps", withPort(addrTCPS), &tcp.Listener{Secrets: secrets, TLS: tc}})
	}
	ctx, cancel := context.WithCancel(g.ctx)
	defer cancel()
	errs := make(chan error, len(ls))
	var wg sync.WaitGroup
	for _, o := range ls {
		o.l.HandshakeTimeout = cfg.Listen.HandshakeTimeout.Duration
		o.l.IdleTimeout = cfg.Listen.IdleTimeout.Duration
		o.l.MaxSessionTime = cfg.Listen.MaxSession.Duration
		o.l.MaxConns = cfg.Listen.MaxConns
		o.l.Log = log.With("listener", o.kind)
		o.l.Handle = handle
		nl, err := net.Listen("tcp", o.addr)
		if err != nil {
			return fmt.Errorf("listen %s %s: %w", o.kind, o.addr, err)
		}
		log.Info("listening", "kind", o.kind, "addr", nl.Addr().String(), "secrets", len(secrets))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.l.Serve(ctx, nl); err != nil {
				errs <- fmt.Errorf("%s %s: %w", o.kind, o.addr, err)
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// withPort adds the default port to an address without one (":8946" for
// "" host means every address).
func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(tcp.DefaultPort))
}
