package integration

import (
	"path/filepath"
	"testing"
	"time"
)

func TestExpTiming(t *testing.T) {
	rng := newRand(1)
	c := newCorpus()
	d := t.TempDir()
	a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
	g := newMailGen(rng, "a", c)
	boxes := []string{"INBOX", "Archive", "Work", "Work/Projects", "Lists", "Lists/golang", "Sent", "Drafts"}
	t0 := time.Now()
	for i := 0; i < 1500; i++ {
		g.deliver(t, a, boxes[rng.IntN(len(boxes))], g.message(2048+rng.IntN(38<<10)), []string{"", "S", "FS", "S"}[rng.IntN(4)])
	}
	for i := 0; i < 3; i++ {
		g.deliver(t, a, "Archive", g.message(1<<20), "S")
	}
	gb := newMailGen(rng, "b", c)
	for i := 0; i < 150; i++ {
		gb.deliver(t, b, boxes[rng.IntN(3)], gb.message(2048+rng.IntN(38<<10)), "")
	}
	t.Logf("generated in %v", time.Since(t0))
	r := run(t, "sync", "--json", a, b)
	t.Logf("%s", r)
	r = run(t, "check", a, b)
	t.Logf("%s", r)
	r = run(t, "sync", "--json", a, b)
	t.Logf("%s", r)
	requireClean(t, c, true, a, b)
}
