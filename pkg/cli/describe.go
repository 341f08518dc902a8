package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/clusterset/clusterset/pkg/inspect"
)

// printDescribe writes `status SERVICE`; now is what record ages are
// counted from.
func printDescribe(out io.Writer, format string, d inspect.ServiceDetail, now time.Time) error {
	if done, err := printStructured(out, format, d); done {
		return err
	}
	fmt.Fprintf(out, "Service %s/%s\n", d.Namespace, d.Name)
	for _, c := range d.Clusters {
		fmt.Fprintf(out, "\n%s (context %s)\n", c.Cluster, c.Context)
		if c.Problem != "" {
			fmt.Fprintf(out, "  not read: %s\n", c.Problem)
			continue
		}
		if c.Export == nil {
			fmt.Fprintln(out, "  ServiceExport: <none>")
		} else {
			fmt.Fprintln(out, "  ServiceExport:")
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			for _, cond := range c.Export.Conditions {
				fmt.Fprintf(w, "    %s\t%s\t%s\t%s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
			}
			w.Flush()
		}
		if c.Import == nil {
			fmt.Fprintln(out, "  ServiceImport: <none>")
			continue
		}
		i := c.Import
		fmt.Fprintf(out, "  ServiceImport: %s, IPs %s, ports %s, clusters %s\n", i.Type, orNone(strings.Join(i.IPs, ", ")),
			orNone(strings.Join(i.Ports, ", ")), orNone(strings.Join(i.Clusters, ", ")))
		if len(i.Endpoints) == 0 {
			fmt.Fprintln(out, "  Endpoints: <none>")
		}
		for _, e := range i.Endpoints {
			fmt.Fprintf(out, "  Endpoints from %s: %d ready of %d\n", e.Source, e.Ready, e.Total)
		}
	}
	fmt.Fprintf(out, "\nRegistry (%s)\n", orNone(d.Registry.Backend))
	if d.Registry.Problem != "" {
		_, err := fmt.Fprintf(out, "  not read: %s\n", d.Registry.Problem)
		return err
	}
	if len(d.Registry.Records) == 0 {
		_, err := fmt.Fprintln(out, "  no cluster has a record of this service")
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  CLUSTER\tTYPE\tPORTS\tENDPOINTS (READY/ALL)\tLAST CHANGED")
	for _, r := range d.Registry.Records {
		changed := "unknown"
		if r.Changed != nil {
			changed = duration.HumanDuration(now.Sub(*r.Changed)) + " ago"
		}
		if r.Problem != "" && r.Type == "" {
			fmt.Fprintf(w, "  %s\t-\t-\t-\t%s (cannot be read: %s)\n", r.Cluster, changed, r.Problem)
			continue
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%d/%d\t%s\n", r.Cluster, r.Type, orNone(strings.Join(r.Ports, ", ")), r.Ready, r.Total, changed)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, r := range d.Registry.Records {
		if r.Problem != "" && r.Type != "" {
			fmt.Fprintf(out, "  %s: read without what does not decode: %s\n", r.Cluster, r.Problem)
		}
	}
	return nil
}
