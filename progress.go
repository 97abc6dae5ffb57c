package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

type contextT = context.Context
type timeoutT = time.Duration

// termProgress shows a long sync's progress on a terminal: messages and
// bytes done, rate and ETA. Off a terminal it is not used at all.
type termProgress struct {
	w       io.Writer
	mu      sync.Mutex
	start   time.Time
	last    time.Time
	msgs    int
	bytes   int64
	totalN  int
	totalB  int64
	printed bool
}

func newProgress(w *os.File, quiet bool) *termProgress {
	if quiet || !term.IsTerminal(int(w.Fd())) {
		return nil
	}
	return &termProgress{w: w, start: time.Now()}
}

func (p *termProgress) Planned(n int, b int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.totalN, p.totalB = n, b
	p.start = time.Now()
}

func (p *termProgress) Add(n int, b int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs += n
	p.bytes += b
	if time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	el := time.Since(p.start).Seconds()
	rate := float64(p.bytes) / max(el, 0.001)
	eta := "?"
	if rate > 0 && p.totalB > p.bytes {
		eta = (time.Duration(float64(p.totalB-p.bytes)/rate) * time.Second / time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%d/%d messages, %s/%s, %s/s, ETA %s   ", p.msgs, p.totalN, human(p.bytes), human(p.totalB), human(int64(rate)), eta)
	p.printed = true
}

func (p *termProgress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.printed {
		fmt.Fprintln(p.w)
	}
}
