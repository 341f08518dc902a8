// Package cli holds the commands of the kubectl plugin `kubectl clusterset`
// (cmd/kubectl-clusterset only runs NewRootCommand). Each command lives in a
// file of its own; what they show across clusters is gathered and judged by
// package inspect.
package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// NewRootCommand returns `kubectl clusterset` with every subcommand.
func NewRootCommand() *cobra.Command {
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
		newExportCommand(),
		newUnexportCommand(),
		newListCommand(),
		newDoctorCommand(),
	)
	return root
}

// ExitError is returned by a command that has already written why it failed
// and only needs the process to exit with this code (doctor: 1 when a check
// failed).
type ExitError int

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
