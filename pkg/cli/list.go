package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/clusterset/clusterset/pkg/inspect"
)

func newListCommand() *cobra.Command {
	var f *clustersFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every exported and imported service across the member clusters",
		Long: `list reads every member cluster at once and shows one row per service: the clusters that
export it (with the reason when an export is not Ready), the clusters that import it with their
ready and total imported endpoints, and the exports that report a conflict.`,
		Example: `  kubectl clusterset list -A
  kubectl clusterset list -n demo --contexts east,west -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, err := f.namespace()
			if err != nil {
				return err
			}
			clusters, err := f.read(cmd.Context(), cmd.ErrOrStderr(), inspect.ReadOptions{Namespace: ns})
			if err != nil {
				return err
			}
			for _, cl := range clusters {
				if cl.Problem != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: %s\n", cl.Context, cl.Problem)
				}
			}
			return printList(cmd.OutOrStdout(), f.output, inspect.List(clusters))
		},
	}
	f = addClustersFlags(cmd, true)
	return cmd
}

func printList(out io.Writer, format string, rows []inspect.Service) error {
	if done, err := printStructured(out, format, rows); done {
		return err
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(out, "No exported or imported services.")
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tNAME\tTYPE\tEXPORTED BY\tIMPORTED IN (READY/ALL ENDPOINTS)\tCONFLICTS")
	for _, r := range rows {
		var exported, imported, conflicts []string
		for _, e := range r.ExportedBy {
			s := e.Cluster
			if !e.Ready {
				s += " (" + e.Reason + ")"
			}
			exported = append(exported, s)
		}
		for _, i := range r.ImportedIn {
			imported = append(imported, fmt.Sprintf("%s %d/%d", i.Cluster, i.Ready, i.Total))
		}
		for _, c := range r.Conflicts {
			conflicts = append(conflicts, c.Cluster+" "+c.Reason)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.Name, orNone(r.Type), orNone(strings.Join(exported, ", ")),
			orNone(strings.Join(imported, ", ")), orNone(strings.Join(conflicts, ", ")))
	}
	return w.Flush()
}
