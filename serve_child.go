package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/twinbox-mail/twinbox/transport"
)

// serveChild serves one authenticated connection of a listener (the
// embedded sshd, tcp:, tcps:) for user: it runs this binary as
// `twinbox serve -u USER` with the connection as its stdin and stdout. The
// child resolves the user, drops root for the mail's owner and serves only
// that user; a crash or a hostile peer ends that child alone.
func (g *globals) serveChild(ctx context.Context, user string, rw io.ReadWriter) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var args []string
	if g.configPath != "" {
		args = append(args, "--config", g.configPath)
	}
	if g.replicaID != "" {
		args = append(args, "--replica-id", g.replicaID)
	}
	if g.verbose {
		args = append(args, "-v")
	}
	args = append(args, "serve", "-u", user)
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stdin = rw
	cmd.Stdout = rw
	stderr := &transport.TailBuffer{Max: 8 << 10}
	cmd.Stderr = stderr
	// The copy from the connection may block in a read after the child
	// ended: do not wait for it long.
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = childEnv()
	err = cmd.Run()
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		g.log.Info("serve", "user", user, "stderr", msg)
	}
	if err != nil {
		if msg := lastLineOf(stderr.String()); msg != "" {
			return fmt.Errorf("%s", strings.TrimPrefix(msg, "twinbox: "))
		}
		return fmt.Errorf("serve -u %s: %w", user, err)
	}
	return nil
}

// childEnv passes the environment on, without what names other programs'
// settings only a parent should see.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SSH_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func lastLineOf(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
