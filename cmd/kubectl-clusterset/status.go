package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/spf13/cobra"

	"github.com/clusterset/clusterset/internal/scheme"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
)

func newStatusCommand() *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	var allNamespaces bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this cluster's identity, its ServiceExports with their conditions and its ServiceImports",
		Example: `  kubectl clusterset status -A
  kubectl clusterset status --context cls2 -n demo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := flags.ToRESTConfig()
			if err != nil {
				return err
			}
			c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
			if err != nil {
				return err
			}
			ns := ""
			if !allNamespaces {
				if ns, _, err = flags.ToRawKubeConfigLoader().Namespace(); err != nil {
					return err
				}
			}
			return printStatus(cmd.Context(), cmd.OutOrStdout(), c, ns)
		},
	}
	flags.AddFlags(cmd.Flags())
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "show every namespace")
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
	fmt.Fprintln(w, "NAMESPACE\tNAME\tVALID\tREADY\tCONFLICT\tMESSAGE")
	for _, e := range exports.Items {
		valid, ready, conflict := condition(e.Status.Conditions, "Valid"), condition(e.Status.Conditions, "Ready"), condition(e.Status.Conditions, "Conflict")
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Namespace, e.Name, valid.short(), ready.short(), conflict.short(), firstProblem(valid, ready, conflict))
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
	ready, total := map[string]int{}, map[string]int{}
	for _, s := range slices.Items {
		key := s.Namespace + "/" + s.Labels[mcsv1beta1.LabelServiceName]
		for _, ep := range s.Endpoints {
			total[key]++
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready[key]++
			}
		}
	}
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
		key := i.Namespace + "/" + i.Name
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\n", i.Namespace, i.Name, i.Spec.Type, orNone(strings.Join(i.Spec.IPs, ",")),
			orNone(strings.Join(ports, ",")), orNone(strings.Join(clusters, ",")), ready[key], total[key])
	}
	return w.Flush()
}

type cond struct {
	status, reason, message string
}

func condition(conds []metav1.Condition, typ string) cond {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return cond{}
	}
	return cond{status: string(c.Status), reason: c.Reason, message: c.Message}
}

func (c cond) short() string {
	if c.status == "" {
		return "-"
	}
	return c.status
}

// firstProblem is the message a user needs: the first condition that is not
// as it should be, else the Ready message.
func firstProblem(valid, ready, conflict cond) string {
	switch {
	case valid.status != "True" && valid.status != "":
		return valid.reason + ": " + valid.message
	case ready.status != "True" && ready.status != "":
		return ready.reason + ": " + ready.message
	case conflict.status == "True":
		return conflict.reason + ": " + conflict.message
	}
	return ready.message
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
