// Command kubectl-clusterset is the kubectl plugin of clusterset
// (`kubectl clusterset ...`). main only wires the subcommands; each lives in
// its own file.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "kubectl-clusterset",
		Short:         "Multi-Cluster Services (KEP-1645) for a set of Kubernetes clusters",
		SilenceUsage:  true,
		SilenceErrors: true,
		// kubectl runs the plugin as `kubectl clusterset`; help says so.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl clusterset"},
	}
	root.AddCommand(
		newSandboxCommand(),
		newStatusCommand(),
		newJoinCommand(),
	)
	return root
}
