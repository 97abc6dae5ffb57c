package sshd

import (
	"context"
	"errors"
	"fmt"
	"github.com/twinbox-mail/twinbox/config"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// MaxUserLen bounds a mail user name.
const MaxUserLen = 255

// ValidUser checks a mail user name from a peer: non-empty, at most
// MaxUserLen bytes of UTF-8, no "/", no "..", no control characters or
// white space, not starting with "-".
func ValidUser(u string) error { return config.ValidUserName(u) }

// ParseCommand checks an exec request: exactly "twinbox serve -u USER" or
// "serve -u USER" (words separated by spaces), with a valid USER. It
// returns the user.
func ParseCommand(cmd string) (string, error) {
	if len(cmd) > 64+MaxUserLen {
		return "", errors.New("command too long")
	}
	for _, r := range cmd {
		if r != ' ' && (unicode.IsControl(r) || unicode.IsSpace(r)) {
			return "", fmt.Errorf("command %q not allowed: only \"twinbox serve -u USER\" is", cmd)
		}
	}
	var w []string
	for _, f := range strings.Split(cmd, " ") {
		if f != "" {
			w = append(w, f)
		}
	}
	if len(w) == 4 && w[0] == "twinbox" {
		w = w[1:]
	}
	if len(w) != 3 || w[0] != "serve" || w[1] != "-u" {
		return "", fmt.Errorf("command %q not allowed: only \"twinbox serve -u USER\" is", cmd)
	}
	if err := ValidUser(w[2]); err != nil {
		return "", err
	}
	return w[2], nil
}

// session handles the one session channel a connection may open.
func (s *Server) session(_ *gliderssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	st := stateOf(ctx)
	if st == nil {
		nc.Reject(gossh.Prohibited, "no connection state")
		return
	}
	st.mu.Lock()
	st.sessions++
	n := st.sessions
	st.mu.Unlock()
	if n > 1 {
		s.refuse(st, "", "a second session channel on one connection")
		nc.Reject(gossh.Prohibited, "one session per connection")
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		s.log.Warn("sshd: accepting the session channel", s.attrs(st, "", "err", err)...)
		return
	}
	// refuseExec tells the client why on stderr, declines the request and
	// ends the channel: nothing else may run on it.
	closeWith := func(req *gossh.Request, user, reason string) {
		s.refuse(st, user, reason)
		fmt.Fprintf(ch.Stderr(), "twinbox sshd: refused: %s\r\n", oneLine(reason))
		req.Reply(false, nil)
		ch.Close()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	started := false
	for req := range reqs {
		switch req.Type {
		case "exec":
			if started {
				s.refuse(st, "", "a second exec request")
				req.Reply(false, nil)
				continue
			}
			var p struct{ Command string }
			if err := gossh.Unmarshal(req.Payload, &p); err != nil {
				closeWith(req, "", "malformed exec request")
				continue
			}
			user, err := ParseCommand(p.Command)
			if err != nil {
				closeWith(req, "", err.Error())
				continue
			}
			// Check the key again, for this user and source address,
			// against the file as it is now.
			st.mu.Lock()
			key := st.key
			st.mu.Unlock()
			if key == nil {
				closeWith(req, user, "no authenticated key")
				continue
			}
			if reason := s.auth.authorize(key, st.remote.Addr(), user); reason != "" {
				closeWith(req, user, reason)
				continue
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				closeWith(req, user, "server shutting down")
				continue
			}
			s.sessions.Add(1)
			s.mu.Unlock()
			started = true
			st.mu.Lock()
			if st.handshake != nil {
				st.handshake.Stop()
			}
			st.mu.Unlock()
			req.Reply(true, nil)
			s.log.Info("sshd: session accepted", s.attrs(st, user, "command", p.Command)...)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.sessions.Done()
				s.run(ctx, conn, st, ch, user)
			}()
		case "pty-req":
			s.refuse(st, "", "pty request not allowed")
			req.Reply(false, nil)
		case "shell":
			closeWith(req, "", "shell request not allowed")
		case "subsystem":
			var p struct{ Name string }
			gossh.Unmarshal(req.Payload, &p)
			closeWith(req, "", fmt.Sprintf("subsystem %q not allowed", p.Name))
		case "env":
			var p struct{ Name, Value string }
			gossh.Unmarshal(req.Payload, &p)
			s.log.Info("sshd: env request ignored", s.attrs(st, "", "name", p.Name)...)
			req.Reply(false, nil)
		case "x11-req":
			s.refuse(st, "", "X11 forwarding not allowed")
			req.Reply(false, nil)
		case "auth-agent-req@openssh.com", "auth-agent-req":
			s.refuse(st, "", "agent forwarding not allowed")
			req.Reply(false, nil)
		case "window-change", "signal", "break", "eow@openssh.com":
			s.log.Debug("sshd: session request declined", s.attrs(st, "", "request", req.Type)...)
			req.Reply(false, nil)
		default:
			s.refuse(st, "", fmt.Sprintf("session request %q not allowed", req.Type))
			req.Reply(false, nil)
		}
	}
}

// run runs the Serve callback on the channel and reports its result as
// the exit status.
func (s *Server) run(ctx gliderssh.Context, conn *gossh.ServerConn, st *connState, ch gossh.Channel, user string) {
	start := time.Now()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sctx = context.WithValue(sctx, infoKey{}, Info{Remote: st.remote, Login: conn.User(), Fingerprint: st.fingerprint(), User: user})
	rw := &idleRW{ch: ch}
	rw.touch()
	var idleStop func()
	if d := s.cfg.IdleTimeout; d > 0 {
		idleStop = rw.watch(d, func() {
			s.log.Warn("sshd: idle timeout, closing the connection", s.attrs(st, user, "idle", d.String())...)
			cancel()
			conn.Close()
		})
	}
	err := s.cfg.Serve(sctx, user, rw)
	if idleStop != nil {
		idleStop()
	}
	status := uint32(0)
	if err != nil {
		status = 1
		fmt.Fprintf(ch.Stderr(), "twinbox: %s\n", oneLine(err.Error()))
	}
	ch.CloseWrite()
	ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{status}))
	ch.Close()
	attrs := s.attrs(st, user, "duration", time.Since(start).Round(time.Millisecond).String(), "in", rw.in.Load(), "out", rw.out.Load())
	if err != nil {
		s.log.Warn("sshd: session failed", append(attrs, "err", err)...)
	} else {
		s.log.Info("sshd: session ended", attrs...)
	}
}

// oneLine makes an error message one bounded line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)), " ")
	if len(s) > 1000 {
		s = s[:1000] + "..."
	}
	return s
}

// idleRW is the session's stream, noting when bytes last moved.
type idleRW struct {
	ch      gossh.Channel
	last    atomic.Int64 // UnixNano of the last byte moved
	in, out atomic.Int64
}

func (r *idleRW) touch() { r.last.Store(time.Now().UnixNano()) }

func (r *idleRW) Read(b []byte) (int, error) {
	n, err := r.ch.Read(b)
	if n > 0 {
		r.in.Add(int64(n))
		r.touch()
	}
	return n, err
}

// Write writes in pieces, so that a large write to a slow peer counts as
// activity while it progresses.
func (r *idleRW) Write(b []byte) (int, error) {
	const piece = 32 << 10
	n := 0
	for n < len(b) {
		m, err := r.ch.Write(b[n:min(len(b), n+piece)])
		n += m
		if m > 0 {
			r.out.Add(int64(m))
			r.touch()
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// watch calls fire once when no byte moved for d; stop ends the watch.
func (r *idleRW) watch(d time.Duration, fire func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				idle := time.Since(time.Unix(0, r.last.Load()))
				if idle >= d {
					fire()
					return
				}
				t.Reset(d - idle)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
