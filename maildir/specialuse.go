package maildir

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// ParseDoveconfSpecialUse reads the special-use flags that Dovecot's
// configuration gives mailboxes (`mailbox NAME { special_use = \Trash }`,
// inside a namespace block or at the top level), from the output of
// `doveconf -n`. Names are returned as twinbox names: "/" between levels
// (the namespace's separator converted), the namespace's prefix removed.
func ParseDoveconfSpecialUse(out []byte) map[string][]string {
	type block struct {
		kind, name  string
		sep, prefix string
		special     []string
	}
	res := map[string][]string{}
	var stack []*block
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		switch {
		case strings.HasSuffix(line, "{"):
			head := strings.TrimSpace(strings.TrimSuffix(line, "{"))
			kind, name, _ := strings.Cut(head, " ")
			stack = append(stack, &block{kind: kind, name: unquoteConf(strings.TrimSpace(name))})
		case line == "}":
			if len(stack) == 0 {
				continue
			}
			b := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if b.kind != "mailbox" || len(b.special) == 0 || b.name == "" {
				continue
			}
			name := b.name
			for i := len(stack) - 1; i >= 0; i-- {
				if ns := stack[i]; ns.kind == "namespace" {
					name = strings.TrimPrefix(name, ns.prefix)
					if ns.sep != "" && ns.sep != "/" {
						name = strings.ReplaceAll(name, ns.sep, "/")
					}
					break
				}
			}
			if name == "" {
				continue
			}
			res[name] = append(res[name], b.special...)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || len(stack) == 0 {
				continue
			}
			k, v = strings.TrimSpace(k), unquoteConf(strings.TrimSpace(v))
			b := stack[len(stack)-1]
			switch {
			case k == "special_use" && b.kind == "mailbox":
				b.special = append(b.special, strings.Fields(v)...)
			case k == "separator" && b.kind == "namespace":
				b.sep = v
			case k == "prefix" && b.kind == "namespace":
				b.prefix = v
			}
		}
	}
	return res
}

func unquoteConf(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `\"`, `"`)
	}
	return s
}

// DoveconfSpecialUse runs `doveconf -n` (with -c configFile unless it is
// empty) and parses its mailbox special-use flags.
func DoveconfSpecialUse(ctx context.Context, doveconf, configFile string) (map[string][]string, error) {
	args := []string{"-n"}
	if configFile != "" {
		args = []string{"-c", configFile, "-n"}
	}
	cmd := exec.CommandContext(ctx, doveconf, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", doveconf, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return ParseDoveconfSpecialUse(out), nil
}
