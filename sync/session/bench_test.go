package session_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// Benchmarks of incremental syncs on one large mailbox (two local replicas
// opened in process, no wire): the cost of a small change must not grow
// with the mailbox. Besides ns/op (wall time, noisy on a shared machine)
// they report cpu-ms/op (user+system time of the process) and allocations.
//
//	go test -run '^$' -bench SyncSmallChange -benchtime 20x ./sync/session/

// benchPair makes roots a and b whose INBOX holds n messages, synced.
func benchPair(b *testing.B, n int) (string, string) {
	b.Helper()
	d := b.TempDir()
	ra, rb := filepath.Join(d, "a"), filepath.Join(d, "b")
	if err := maildir.CreateMailboxDirs(ra); err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("The quick brown fox jumps over the lazy dog.\n", 60)
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("Subject: message %d\n\n%s", i, body)
		flags := "S"
		if i%7 == 0 {
			flags = ""
		}
		name := fmt.Sprintf("%d.M%dP%d.benchhost,S=%d,W=%d:2,%s", t0+int64(i), i%1000000, 100+i%50, len(msg), len(msg)+62, flags)
		p := filepath.Join(ra, "cur", name)
		if err := os.WriteFile(p, []byte(msg), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	testmail.Sync(b, ra, rb, session.Options{})
	testmail.Sync(b, ra, rb, session.Options{}) // settle the stamps
	return ra, rb
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSizes are the INBOX sizes: TWINBOX_BENCH_SIZES="2000 10000" to
// choose (the 50k bench corpus has about 10k messages in INBOX).
func benchSizes(b *testing.B) []int {
	s := os.Getenv("TWINBOX_BENCH_SIZES")
	if s == "" {
		return []int{2000, 6000}
	}
	var out []int
	for _, f := range strings.Fields(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			b.Fatalf("TWINBOX_BENCH_SIZES: bad size %q", f)
		}
		out = append(out, n)
	}
	return out
}

func BenchmarkSyncSmallChange(b *testing.B) {
	for _, n := range benchSizes(b) {
		for _, op := range []string{"none", "flag", "new"} {
			b.Run(fmt.Sprintf("%s/%d", op, n), func(b *testing.B) {
				ra, rb := benchPair(b, n)
				unseen, _ := filepath.Glob(filepath.Join(ra, "cur", "*:2,"))
				var cpu time.Duration
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					switch op {
					case "flag":
						if len(unseen) == 0 {
							b.Fatal("no unseen message left to flag")
						}
						f := unseen[0]
						unseen = unseen[1:]
						if err := os.Rename(f, f+"S"); err != nil {
							b.Fatal(err)
						}
					case "new":
						testmail.Deliver(b, ra, "INBOX", fmt.Sprintf("Subject: new %d\n\nhello\n", i))
					}
					c0 := cpuTime()
					b.StartTimer()
					s, err := testmail.TrySync(ra, rb, session.Options{})
					b.StopTimer()
					cpu += cpuTime() - c0
					if err != nil || s.Changed {
						b.Fatalf("sync: %v (changed during sync: %v)", err, s != nil && s.Changed)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
			})
		}
	}
}
