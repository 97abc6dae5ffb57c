//go:build linux

package index

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/model"
)

// mappedRSS returns the resident kB of this process's mappings of path
// (from /proc/self/smaps).
func mappedRSS(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, kb := false, 0
	for sc.Scan() {
		l := sc.Text()
		if fs := strings.Fields(l); len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			// A mapping's header line (the path is missing on anonymous ones).
			in = len(fs) >= 6 && fs[len(fs)-1] == path
			continue
		}
		if in && strings.HasPrefix(l, "Rss:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			kb += n
		}
	}
	return kb
}

// trimMapped lets the index's mapped pages go and every record still reads
// back the same (the map is the file's page cache, not a copy).
func TestTrimMappedKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBName)
	s, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := model.MailboxGUID{7}
	const n = 5000
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := &Box{Mailbox: model.Mailbox{GUID: g, Name: "INBOX", UIDValidity: 1}}
		bt, err := openBoxTx(tx, b)
		if err != nil {
			return err
		}
		for u := uint32(1); u <= n; u++ {
			m := &Msg{Message: model.Message{UID: u, GUID: fmt.Sprintf("1700000000.M%dP1.host,S=1234", u), Size: 1234,
				Flags: model.Flags{`\Seen`: {Set: true}}}, File: fmt.Sprintf("1700000000.M%dP1.host,S=1234:2,S", u)}
			if err := bt.put(m); err != nil {
				return err
			}
		}
		return putBox(tx, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	read := func() {
		t.Helper()
		err := s.db.View(func(tx *bolt.Tx) error {
			msgs, err := loadMsgs(tx, g)
			if err != nil {
				return err
			}
			if len(msgs) != n {
				return fmt.Errorf("%d records, want %d", len(msgs), n)
			}
			for i, m := range msgs {
				if m.UID != uint32(i+1) || m.GUID != fmt.Sprintf("1700000000.M%dP1.host,S=1234", i+1) || !m.Flags[`\Seen`].Set {
					return fmt.Errorf("record %d reads %+v", i, m)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	read()
	before := mappedRSS(t, path)
	if before < 64 {
		t.Skipf("the index map holds only %d kB after a full read: nothing to trim here", before)
	}
	s.trimMapped()
	if after := mappedRSS(t, path); after > before/4 {
		t.Fatalf("index map resident %d kB after trimMapped, %d kB before", after, before)
	}
	read()
	s.trimMapped()
	read()
}
