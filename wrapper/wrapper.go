// Package wrapper is the forced-command front of the sync server: what runs
// when OpenSSH's authorized_keys says command="twinbox wrapper". It finds
// out which user the connecting peer wants (from SSH_ORIGINAL_COMMAND, or
// from the first line of the stream for the remoteprefix: form), refuses
// anything that is not a sync, and gives up root for the mail owner before
// any mail is touched.
package wrapper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/twinbox-mail/twinbox/config"
)

// Request is what the peer asked for.
type Request struct {
	// User is the user named in the command; empty when Prefix.
	User string
	// Prefix: the user name comes as the first line of the stream.
	Prefix bool
}

// ParseCommand reads the command a peer asked OpenSSH to run. Accepted:
//
//	twinbox serve -u USER      (remote:, the default ssh command)
//	twinbox serve --user-prefix (remoteprefix:)
//	""                          (no command: remoteprefix: by hand)
//
// with or without the leading "twinbox" (or a path ending in /twinbox),
// and -u USER also as -uUSER or --user USER / --user=USER. Anything else,
// including extra words, is refused: the wrapper runs nothing but the sync
// server.
func ParseCommand(cmd string) (Request, error) {
	words, err := config.SplitCommand(cmd)
	if err != nil {
		if strings.TrimSpace(cmd) == "" {
			return Request{Prefix: true}, nil
		}
		return Request{}, fmt.Errorf("refused command %q: %v", clip(cmd), err)
	}
	if w := words[0]; w == "twinbox" || (len(w) > len("/twinbox") && w[len(w)-len("/twinbox"):] == "/twinbox") {
		words = words[1:]
	}
	refuse := func() (Request, error) {
		return Request{}, fmt.Errorf("refused command %q: only `twinbox serve -u USER` or `twinbox serve --user-prefix` may run here", clip(cmd))
	}
	if len(words) == 0 || words[0] != "serve" {
		return refuse()
	}
	words = words[1:]
	var r Request
	switch {
	case len(words) == 1 && words[0] == "--user-prefix":
		r.Prefix = true
	case len(words) == 2 && (words[0] == "-u" || words[0] == "--user"):
		r.User = words[1]
	case len(words) == 1 && len(words[0]) > 2 && words[0][:2] == "-u":
		r.User = words[0][2:]
	case len(words) == 1 && len(words[0]) > 7 && words[0][:7] == "--user=":
		r.User = words[0][7:]
	default:
		return refuse()
	}
	if !r.Prefix {
		if err := config.ValidUserName(r.User); err != nil {
			return Request{}, fmt.Errorf("refused: %v", err)
		}
	}
	return r, nil
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// ReadUserLine reads the remoteprefix: line, "USER\n", from r without
// reading past it (one byte at a time: what follows belongs to the sync
// protocol). The line is bounded.
func ReadUserLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) <= config.MaxUserName {
		n, err := r.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				u := string(b)
				if len(u) > 0 && u[len(u)-1] == '\r' {
					u = u[:len(u)-1]
				}
				if err := config.ValidUserName(u); err != nil {
					return "", fmt.Errorf("refused: %v", err)
				}
				return u, nil
			}
			b = append(b, one[0])
			continue
		}
		if err == io.EOF {
			return "", errors.New("refused: the stream ended before the user name line")
		}
		if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("refused: user name line longer than %d bytes", config.MaxUserName)
}

// DropPrivileges makes this process run as uid/gid (and no supplementary
// groups) when it runs as root. It refuses to go on as root for a uid of 0
// unless allowRoot: mail owned by root is a misconfiguration.
func DropPrivileges(uid, gid int, allowRoot bool) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if uid < 0 || gid < 0 {
		return errors.New("cannot tell who owns the mail (set users.uid and users.gid)")
	}
	if uid == 0 {
		if allowRoot {
			return nil
		}
		return errors.New("the mail is owned by root: refusing to serve it as root (set users.uid/gid)")
	}
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	if os.Geteuid() != uid || os.Getegid() != gid {
		return fmt.Errorf("still running as %d:%d after dropping to %d:%d", os.Geteuid(), os.Getegid(), uid, gid)
	}
	return nil
}
