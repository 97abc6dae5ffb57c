// Command timecmd runs a command and prints its wall time and its CPU time
// (user+system, from wait4's rusage, to the microsecond) in milliseconds:
// "WALL CPU". On a shared machine the CPU time of a short run is a steadier
// figure than its wall time (bench/alternate-sizes.sh prints both).
//
//	timecmd [-o FILE] COMMAND [ARG...]
//
// The figures go to FILE (default stderr). The command's stdout and stderr
// go to this program's; its exit code is this program's.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

func main() {
	args := os.Args[1:]
	out := os.Stderr
	if len(args) >= 2 && args[0] == "-o" {
		f, err := os.Create(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "timecmd:", err)
			os.Exit(127)
		}
		defer f.Close()
		out, args = f, args[2:]
	}
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: timecmd [-o FILE] COMMAND [ARG...]")
		os.Exit(2)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "timecmd:", err)
		os.Exit(127)
	}
	ps := cmd.ProcessState
	cpu := ps.UserTime() + ps.SystemTime()
	fmt.Fprintf(out, "%.3f %.3f\n", float64(wall.Microseconds())/1000, float64(cpu.Microseconds())/1000)
	if out != os.Stderr {
		out.Close()
	}
	os.Exit(code)
}
