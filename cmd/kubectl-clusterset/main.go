// Command kubectl-clusterset is the kubectl plugin of clusterset
// (`kubectl clusterset ...`). main only wires: the commands live in pkg/cli.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clusterset/clusterset/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewRootCommand().ExecuteContext(ctx)
	stop()
	var exit cli.ExitError
	switch {
	case errors.As(err, &exit):
		// The command has said what failed (doctor's failed checks).
		os.Exit(int(exit))
	case err != nil:
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
