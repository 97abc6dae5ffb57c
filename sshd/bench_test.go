package sshd_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/index"
	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/sync/session"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/wire"
)

// BenchmarkFirstSync compares a first sync of 3000 messages (4 KiB each)
// over the embedded SSH server with the same sync over an in-process pipe.
// Not a test: go test -run '^$' -bench FirstSync ./sshd/
func BenchmarkFirstSync(b *testing.B) {
	for _, via := range []string{"pipe", "ssh"} {
		b.Run(via, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				d := b.TempDir()
				local, remote := filepath.Join(d, "local"), filepath.Join(d, "remote")
				body := strings.Repeat("0123456789abcdef\r\n", 230)
				for j := 0; j < 3000; j++ {
					testmail.Deliver(b, local, "INBOX", fmt.Sprintf("%d %s", j, body))
				}
				var sum *session.Summary
				var err error
				if via == "ssh" {
					k := newClientKey(b, d, "k")
					ts := startServer(b, serverOpts{authorized: []string{`users="alice" ` + k.line}, serve: syncServe(map[string]string{"alice": remote}, nil)})
					kh := knownHostsFor(b, ts, d)
					b.StartTimer()
					sum, err = syncSSH(b, ts, k, kh, local, "alice")
				} else {
					ctx := context.Background()
					rl, _ := index.Open(ctx, maildir.Location{Root: local}, index.Options{User: "alice", LockTimeout: 10 * time.Second, ReplicaID: "client-alice"})
					open := func(ctx context.Context, u string, peer replica.Info) (replica.Replica, error) {
						return index.Open(ctx, maildir.Location{Root: remote}, index.Options{User: u, LockTimeout: 10 * time.Second, ReplicaID: "server-alice"})
					}
					b.StartTimer()
					conn, wait, derr := transport.ServeInProcess(ctx, &wire.Server{Open: open})
					if derr != nil {
						b.Fatal(derr)
					}
					cl, derr := wire.Dial(ctx, conn, "alice", rl.Info())
					if derr != nil {
						b.Fatal(derr)
					}
					sum, err = session.Run(ctx, rl, cl, session.Options{})
					cl.Close()
					wait()
					rl.Close()
				}
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if got := sum.ResultA.Fetched + sum.ResultB.Fetched; got != 3000 {
					b.Fatalf("fetched %d", got)
				}
			}
		})
	}
}
