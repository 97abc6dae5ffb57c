// Package testbin builds the twinbox binary for the whole-binary tests.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Build returns the binary to test: TWINBOX_TEST_BINARY if set, else a
// fresh `go build` (CGO_ENABLED=0) into a new temporary directory that other
// users may read (tests run it as the mail owner too). cleanup removes what
// Build made.
func Build(prefix string) (bin string, cleanup func(), err error) {
	if p := os.Getenv("TWINBOX_TEST_BINARY"); p != "" {
		return p, func() {}, nil
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	bin = filepath.Join(dir, "twinbox")
	cmd := exec.Command(GoTool(), "build", "-trimpath", "-o", bin, "github.com/twinbox-mail/twinbox")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("building twinbox: %v\n%s", err, out)
	}
	return bin, cleanup, nil
}

// GoTool finds the go command: go test puts GOROOT/bin first in PATH.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
