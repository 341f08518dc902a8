// Command pause is the pod sandbox ("infra") container of a node: the first
// process of every pod, which holds the pod's namespaces open while the
// pod's containers come and go. It does nothing but wait for SIGTERM or
// SIGINT, then exits 0, and, as PID 1 of the pod's PID namespace when the pod
// shares it (shareProcessNamespace), reaps the zombies that orphaned
// processes leave behind. It is the pause image of `make images`, the
// counterpart of registry.k8s.io/pause, written in Go so that it builds
// static with nothing but the Go toolchain.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause (clusterset test image)")
		return
	}
	if os.Getpid() != 1 {
		// Still useful (it waits for a signal), but it only inherits orphans
		// as PID 1, so say why none would be reaped.
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, orphaned processes are reaped by the real PID 1")
	}
	// A buffer of one is enough for SIGCHLD: signals of one kind coalesce,
	// and each wake-up reaps every zombie there is.
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	reap() // zombies inherited before the handler was installed
	for {
		select {
		case <-children:
			reap()
		case sig := <-stop:
			fmt.Fprintf(os.Stderr, "pause: %s, exiting\n", sig)
			os.Exit(0)
		}
	}
}

// reap collects the exit status of every child that has exited, without
// blocking, and returns their process IDs. A child that has not exited yet
// is left alone.
func reap() []int {
	var pids []int
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		// pid 0: children exist but none has exited; ECHILD: no children.
		if pid <= 0 || err != nil {
			return pids
		}
		pids = append(pids, pid)
	}
}
