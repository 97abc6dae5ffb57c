package transport

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// cmdConn is a program's stdout (read) and stdin (write).
type cmdConn struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out io.ReadCloser
}

func (c *cmdConn) Read(b []byte) (int, error)  { return c.out.Read(b) }
func (c *cmdConn) Write(b []byte) (int, error) { return c.in.Write(b) }

// Close closes the program's stdin and waits for it to exit.
func (c *cmdConn) Close() error {
	c.in.Close()
	err := c.cmd.Wait()
	c.out.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", c.cmd.Path, err)
	}
	return nil
}

// Command starts argv and returns a stream over its stdin and stdout; its
// stderr goes to ours. Closing the stream waits for the program.
func Command(ctx context.Context, argv []string) (io.ReadWriteCloser, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("empty command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	return &cmdConn{cmd: cmd, in: in, out: out}, nil
}
