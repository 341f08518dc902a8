package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"

	"github.com/clusterset/clusterset/internal/scheme"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/conditions"
	"github.com/clusterset/clusterset/pkg/inspect"
)

func newStatusCommand() *cobra.Command {
	var f *clustersFlags
	cmd := &cobra.Command{
		Use:   "status [SERVICE]",
		Short: "Show this cluster's identity, exports and imports; with SERVICE, that service in every member cluster and the registry",
		Long: `Without SERVICE, status shows the cluster of --context: its identity, its ServiceExports with
the condition that needs attention, and its ServiceImports with IPs, clusters and endpoints.

With SERVICE, status shows that service (in -n or the context's namespace) as every member
cluster sees it: the ServiceExport's conditions, the ServiceImport (type, IPs, ports, clusters),
the imported endpoints by source cluster and readiness; then each cluster's record in the
registry and how long ago its content last changed (the exporting cluster's time of the change
it carries, the start of the propagation lag). A hub is read with the first member's own hub
credentials; Cloud Map with this machine's AWS credentials (AWS_PROFILE, AWS_* variables,
~/.aws; servicediscovery:DiscoverInstances is enough) in the controller's AWS_REGION.`,
		Example: `  kubectl clusterset status -A
  kubectl clusterset status nginx-hello -n demo --contexts cls1,cls2`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := f.namespace()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				if ns == "" {
					return fmt.Errorf("status SERVICE needs one namespace (-n), not -A")
				}
				key := types.NamespacedName{Namespace: ns, Name: args[0]}
				clusters, err := f.read(cmd.Context(), cmd.ErrOrStderr(), inspect.ReadOptions{Namespace: ns, Registry: true})
				if err != nil {
					return err
				}
				d := inspect.Describe(clusters, key, inspect.ReadRegistry(cmd.Context(), clusters, key))
				return printDescribe(cmd.OutOrStdout(), f.output, d, time.Now())
			}
			if f.output != "table" || len(f.contexts) > 0 {
				return fmt.Errorf("-o and --contexts need SERVICE; without it status shows the cluster of --context as a table")
			}
			cfg, err := f.config.ToRESTConfig()
			if err != nil {
				return err
			}
			c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
			if err != nil {
				return err
			}
			return printStatus(cmd.Context(), cmd.OutOrStdout(), c, ns)
		},
	}
	f = addClustersFlags(cmd, true)
	f.addControllerNamespace(cmd)
	return cmd
}

// printStatus writes what a user debugging the clusterset looks at first.
// namespace "" means all namespaces.
func printStatus(ctx context.Context, out io.Writer, c client.Client, namespace string) error {
	fmt.Fprintf(out, "cluster ID:     %s\nclusterset ID:  %s\n", property(ctx, c, aboutv1alpha1.ClusterIDName), property(ctx, c, aboutv1alpha1.ClusterSetIDName))

	var exports mcsv1beta1.ServiceExportList
	if err := c.List(ctx, &exports, client.InNamespace(namespace)); err != nil {
		return fmt.Errorf("listing ServiceExports: %w", err)
	}
	fmt.Fprintf(out, "\nSERVICE EXPORTS (%d)\n", len(exports.Items))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	// One column per condition clusterset sets (conditions.Export), so a
	// new condition shows up here without a change.
	header := []string{"NAMESPACE", "NAME"}
	for _, k := range conditions.Export {
		header = append(header, strings.ToUpper(k.Type))
	}
	fmt.Fprintln(w, strings.Join(append(header, "MESSAGE"), "\t"))
	for _, e := range exports.Items {
		conds := e.Status.Conditions
		msg := ""
		if st := inspect.ExportStateOf("", conds); st.Reason != "" {
			msg = st.Reason + ": " + st.Message
		} else if ready := meta.FindStatusCondition(conds, string(mcsv1beta1.ServiceExportConditionReady)); ready != nil {
			msg = ready.Message
		}
		row := []string{e.Namespace, e.Name}
		for _, k := range conditions.Export {
			row = append(row, conditions.StatusOf(conds, k.Type))
		}
		fmt.Fprintln(w, strings.Join(append(row, msg), "\t"))
	}
	if err := w.Flush(); err != nil {
		return err
	}

	var imports mcsv1beta1.ServiceImportList
	if err := c.List(ctx, &imports, client.InNamespace(namespace)); err != nil {
		return fmt.Errorf("listing ServiceImports: %w", err)
	}
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, client.InNamespace(namespace), client.HasLabels{mcsv1beta1.LabelServiceName}); err != nil {
		return fmt.Errorf("listing imported EndpointSlices: %w", err)
	}
	counts := inspect.EndpointCounts(slices.Items)
	fmt.Fprintf(out, "\nSERVICE IMPORTS (%d)\n", len(imports.Items))
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tNAME\tTYPE\tIPS\tPORTS\tCLUSTERS\tENDPOINTS (READY/ALL)")
	for _, i := range imports.Items {
		var ports, clusters []string
		for _, p := range i.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
		for _, cl := range i.Status.Clusters {
			clusters = append(clusters, cl.Cluster)
		}
		sort.Strings(clusters)
		ready, total := inspect.Sum(counts[types.NamespacedName{Namespace: i.Namespace, Name: i.Name}])
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\n", i.Namespace, i.Name, i.Spec.Type, orNone(strings.Join(i.Spec.IPs, ",")),
			orNone(strings.Join(ports, ",")), orNone(strings.Join(clusters, ",")), ready, total)
	}
	return w.Flush()
}

func property(ctx context.Context, c client.Client, name string) string {
	var p aboutv1alpha1.ClusterProperty
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
		return "<unset: ClusterProperty " + name + " not readable: " + err.Error() + ">"
	}
	return p.Spec.Value
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
