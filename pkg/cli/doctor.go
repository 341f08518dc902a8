package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterset/clusterset/pkg/inspect"
)

func newDoctorCommand() *cobra.Command {
	var f *clustersFlags
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check every member cluster and the registry, and say how to fix what fails",
		Long: `doctor checks, per member cluster: the API is reachable; the ServiceExport, ServiceImport and
ClusterProperty APIs are served; the cluster's identity is set, valid and unique across the
contexts; clusterset-controller is available and has a leader; CoreDNS serves clusterset.local
with the multicluster plugin and may read what it needs; the member's hub credentials reach the
hub and may write its own records and nothing else (Cloud Map: the registry is readable with
this machine's AWS credentials); its clock is close to this machine's. Then, for the clusterset:
one clusterset ID, every member's heartbeat fresh, no export in conflict.

Cloud Map is read with this machine's AWS credentials (AWS_PROFILE, AWS_* variables, ~/.aws),
which need only servicediscovery:DiscoverInstances (config/iam/cloudmap-readonly-policy.json), in
the controller's AWS_REGION.

Each failed check says how to fix it (docs/troubleshooting.md has more). doctor exits 1 when a
check fails; warnings do not fail it.`,
		Example: `  kubectl clusterset doctor
  kubectl clusterset doctor --contexts east,west -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			clusters, err := f.read(cmd.Context(), cmd.ErrOrStderr(), inspect.ReadOptions{Health: true})
			if err != nil {
				return err
			}
			h := inspect.ReadRegistryHealth(cmd.Context(), clusters)
			checks := inspect.Doctor(clusters, h, time.Now())
			if err := printDoctor(cmd.OutOrStdout(), f.output, checks); err != nil {
				return err
			}
			if inspect.Failed(checks) {
				return ExitError(1)
			}
			return nil
		},
	}
	f = addClustersFlags(cmd, false)
	f.addControllerNamespace(cmd)
	return cmd
}

func printDoctor(out io.Writer, format string, checks []inspect.Check) error {
	if done, err := printStructured(out, format, checks); done {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VERDICT\tCLUSTER\tCHECK\tMESSAGE")
	var fixes []inspect.Check
	for _, c := range checks {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Verdict, orDash(c.Cluster), c.Name, c.Message)
		if c.Verdict != inspect.OK && c.Fix != "" {
			fixes = append(fixes, c)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	failed, warned := 0, 0
	for _, c := range checks {
		switch c.Verdict {
		case inspect.Fail:
			failed++
		case inspect.Warn:
			warned++
		}
	}
	fmt.Fprintf(out, "\n%s: %d failed, %s\n", plural(len(checks), "check"), failed, plural(warned, "warning"))
	for _, c := range fixes {
		fmt.Fprintf(out, "\n%s %s %s:\n  %s\n", c.Verdict, orDash(c.Cluster), c.Name, c.Fix)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
