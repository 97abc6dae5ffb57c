//go:build linux

package transport

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeSize is the kernel buffer asked for each in-process pipe: a first
// sync streams its bodies through one, and with the default 64 KiB the
// sending and the receiving goroutine take turns far more often.
const pipeSize = 1 << 20

// growPipe asks for a pipeSize buffer (best effort: a smaller
// /proc/sys/fs/pipe-max-size for a non-root user just leaves the default).
func growPipe(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize)
		})
	}
}
