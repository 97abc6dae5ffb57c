package wire_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox-mail/twinbox/internal/testmail"
	"github.com/twinbox-mail/twinbox/sync/session"
)

// A first sync of more bodies than are fsynced one by one (a large batch,
// flushed by one syncfs, each body moved into cur/ by renameat2) brings
// every body over byte for byte, small, empty-bodied and larger than a wire
// frame alike, into the mailboxes it came from, over the wire in both
// directions and between two replicas opened in process; no temporary file
// stays behind.
func TestLargeBatchBodies(t *testing.T) {
	for _, mode := range []string{"wire", "wire-remote-first", "in-process"} {
		t.Run(mode, func(t *testing.T) {
			d := t.TempDir()
			a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
			deliver := func(box, body string) { testmail.Deliver(t, a, box, body) }
			for i := 0; i < 200; i++ {
				body := fmt.Sprintf("message %d\n%s", i, strings.Repeat("x", i*37))
				switch i {
				case 7:
					body = ""
				case 50, 150:
					body = fmt.Sprintf("big %d\n%s", i, strings.Repeat("0123456789abcdef\n", 20000)) // > 256 KiB
				}
				deliver("INBOX", body)
			}
			for i := 0; i < 90; i++ {
				deliver("Work", fmt.Sprintf("work %d", i))
			}
			var sum *session.Summary
			switch mode {
			case "wire":
				sum = syncOverWire(t, a, b, false).sum
			case "wire-remote-first":
				sum = syncOverWire(t, a, b, true).sum
			default:
				sum = testmail.Sync(t, a, b, session.Options{})
			}
			if got := sum.ResultA.Fetched + sum.ResultB.Fetched; got != 290 {
				t.Fatalf("fetched %d bodies, want 290 (skipped: %v %v)", got, sum.ResultA.Skipped, sum.ResultB.Skipped)
			}
			if diff := testmail.Check(t, a, b); len(diff) > 0 {
				t.Fatalf("replicas differ:\n%s", strings.Join(diff, "\n"))
			}
			contents := func(root string) map[string]int {
				out := map[string]int{}
				for _, box := range []string{"INBOX", "Work"} {
					var paths []string
					for _, sub := range []string{"cur", "new"} {
						m, _ := filepath.Glob(filepath.Join(testmail.Dir(t, root, box), sub, "*"))
						paths = append(paths, m...)
					}
					for _, p := range paths {
						data, err := os.ReadFile(p)
						if err != nil {
							t.Fatal(err)
						}
						out[box+"\x00"+string(data)]++
					}
				}
				return out
			}
			ca, cb := contents(a), contents(b)
			if len(ca) != 290 {
				t.Fatalf("A holds %d distinct messages, want 290", len(ca))
			}
			for c, n := range ca {
				if cb[c] != n {
					t.Fatalf("B holds %d copies of a message of %d bytes, A %d", cb[c], len(c), n)
				}
			}
			if len(cb) != len(ca) {
				t.Fatalf("B holds %d distinct messages, A %d", len(cb), len(ca))
			}
			if left := tmpLeftovers(t, b); len(left) > 0 {
				t.Fatalf("left in tmp/: %v", left)
			}
		})
	}
}
