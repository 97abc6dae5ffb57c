package wire_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/sync/replica"
	"github.com/twinbox-mail/twinbox/transport"
	"github.com/twinbox-mail/twinbox/wire"
)

// A hand-made client's first bytes against a real server.
func TestHandshakeServerSide(t *testing.T) {
	big := strings.Repeat("x", wire.MaxFrame)
	tests := []struct {
		name      string
		in        []byte
		wantHello string // the error in the server's hello, if it sends one
		wantErr   string // in the server's error frame, if it sends one
		serverErr string
	}{
		{"newer client", jsonFrame('H', map[string]any{"proto": "twinbox", "min": 4, "max": 5, "user": user}),
			`this server speaks twinbox protocol version 3, the client "twinbox" 4-5`, "", "protocol version 3"},
		{"older client", jsonFrame('H', map[string]any{"proto": "twinbox", "min": 1, "max": 1}),
			`the client "twinbox" 1-1`, "", "protocol version 3"},
		// Version 2 has no unsure Born stamps: refused, not downgraded to.
		{"version 2 client", jsonFrame('H', map[string]any{"proto": "twinbox", "min": 2, "max": 2, "user": user}),
			`this server speaks twinbox protocol version 3, the client "twinbox" 2-2`, "", "protocol version 3"},
		{"other protocol", jsonFrame('H', map[string]any{"proto": "dsync", "min": 1, "max": 1}),
			`the client "dsync" 1-1`, "", `"dsync"`},
		{"ssh banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), "", "unknown frame type 0x53", "unknown frame type 0x53"},
		{"request first", jsonFrame('Q', map[string]any{"op": "begin"}), "", "got frame 'Q', want a hello", "want a hello"},
		{"hello not json", frame('H', []byte("hello")), "", "handshake: invalid character", "handshake"},
		{"hello in parts", append(frame('P', []byte(`{"proto":"twinbox","x":"`+big[:wire.MaxFrame-24])), jsonFrame('H', map[string]any{})...), "", "exceeds", "exceeds"},
		{"huge hello", []byte{'H', 0x7f, 0xff, 0xff, 0xff}, "", "exceeds the limit", "exceeds the limit"},
		{"truncated hello", jsonFrame('H', map[string]any{"proto": "twinbox", "min": 1, "max": 1})[:12], "", "", "truncated"},
		{"nothing", nil, "", "", "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, maildir.LayoutMaildirPP)
			e.watchdog()
			before := e.rootSnap()
			go func() {
				e.conn.Write(tt.in)
				if tt.wantHello == "" && tt.wantErr == "" {
					e.conn.Close() // the peer is gone
				}
			}()
			r := bufio.NewReader(e.conn)
			ft, msg, err := rawReply(t, r)
			switch {
			case tt.wantHello != "":
				var h struct{ Error string }
				json.Unmarshal([]byte(msg), &h)
				if err != nil || ft != 'H' || !strings.Contains(h.Error, tt.wantHello) {
					t.Errorf("server's hello: %q %s %v, want one with error %q", ft, msg, err, tt.wantHello)
				}
			case tt.wantErr != "":
				if err != nil || ft != 'E' || !strings.Contains(msg, tt.wantErr) {
					t.Errorf("server's reply: %q %s %v, want an error %q", ft, msg, err, tt.wantErr)
				}
			default:
				if err == nil {
					t.Errorf("server replied %q %s to a client that left", ft, msg)
				}
			}
			serr := e.finish()
			wantErr(t, "server", serr, tt.serverErr)
			if tt.name != "nothing" && !errors.Is(serr, wire.ErrProtocol) {
				t.Errorf("server error %v is not a protocol error", serr)
			}
			e.unchanged(before)
		})
	}
}

// A hand-made server's answers to a real client.
func TestHandshakeClientSide(t *testing.T) {
	tests := []struct {
		name    string
		reply   []byte
		close   bool
		want    string
		toldErr string // what the client tells the server, if anything
	}{
		{"newer server", jsonFrame('H', map[string]any{"proto": "twinbox", "min": 4, "max": 5}), false,
			`peer speaks "twinbox" versions 4-5, this build 3`, `client refused: this client speaks twinbox protocol version 3, the server "twinbox" 4-5`},
		{"version 2 server", jsonFrame('H', map[string]any{"proto": "twinbox", "min": 2, "max": 2}), false,
			`peer speaks "twinbox" versions 2-2, this build 3`, `client refused: this client speaks twinbox protocol version 3, the server "twinbox" 2-2`},
		{"other protocol", jsonFrame('H', map[string]any{"proto": "imap", "min": 1, "max": 1}), false, `peer speaks "imap"`, `the server "imap"`},
		{"server refuses in its hello", jsonFrame('H', map[string]any{"proto": "twinbox", "min": 1, "max": 1, "error": "user bob is locked"}), false, "peer refused: user bob is locked", ""},
		{"server refuses with an error frame", jsonFrame('E', map[string]any{"message": "go away"}), false, "peer refused: go away", ""},
		{"server sends a reply", jsonFrame('R', map[string]any{}), false, "handshake: got frame 'R'", ""},
		{"garbage", []byte("220 smtp.example.org ESMTP\r\n"), false, "unknown frame type 0x32", ""},
		{"hello not json", frame('H', []byte("{")), false, "handshake", ""},
		{"server hangs up", nil, true, "handshake: EOF", ""},
		{"truncated hello", jsonFrame('H', map[string]any{"proto": "twinbox"})[:9], true, "truncated", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ce, se, err := transport.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer ce.Close()
			told := make(chan string, 1)
			go func() {
				defer se.Close()
				r := bufio.NewReader(se)
				if ft, _, err := rawReply(t, r); err != nil || ft != 'H' {
					t.Errorf("client's first frame: %q, %v", ft, err)
				}
				se.Write(tt.reply)
				if tt.close {
					told <- ""
					return
				}
				ft, msg, err := rawReply(t, r)
				if err == nil && ft == 'E' {
					told <- msg
				} else {
					told <- ""
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cl, err := wire.Dial(ctx, ce, user, self)
			if err == nil {
				cl.Close()
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Dial: %v, want %q", err, tt.want)
			}
			got := <-told
			if tt.toldErr == "" && got != "" {
				t.Errorf("client told the server %q", got)
			}
			if !strings.Contains(got, tt.toldErr) {
				t.Errorf("client told the server %q, want %q", got, tt.toldErr)
			}
		})
	}
}

// Cancelling the context ends a Dial that waits for a silent server.
func TestDialCancel(t *testing.T) {
	ce, se, err := transport.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	go io.Copy(io.Discard, se)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() {
		_, err := wire.Dial(ctx, ce, user, replica.Info{ReplicaID: "c"})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Dial succeeded against a silent server")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Dial did not end when its context was cancelled")
	}
}
