package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/scheme"
	"github.com/clusterset/clusterset/pkg/inspect"
)

// DefaultWait bounds how long export and unexport wait for the controller.
const DefaultWait = 30 * time.Second

// singleClusterFlags are the flags of commands acting on one cluster.
type singleClusterFlags struct {
	config *genericclioptions.ConfigFlags
	wait   time.Duration
}

func addSingleClusterFlags(cmd *cobra.Command, waitFor string) *singleClusterFlags {
	f := &singleClusterFlags{config: genericclioptions.NewConfigFlags(true)}
	f.config.AddFlags(cmd.Flags())
	cmd.Flags().DurationVar(&f.wait, "wait", DefaultWait, "how long to wait "+waitFor+"; 0 returns at once")
	return f
}

func (f *singleClusterFlags) client() (client.Client, string, error) {
	ns, _, err := f.config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	cfg, err := f.config.ToRESTConfig()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	return c, ns, err
}

func newExportCommand() *cobra.Command {
	return serviceCommand(&cobra.Command{
		Use:   "export SERVICE",
		Short: "Export a Service to the clusterset (create its ServiceExport) and report the export's conditions",
		Long: `export creates the ServiceExport of SERVICE in -n (or the context's namespace), then waits up to
--wait for the controller to judge it: Ready=True (exported), or Valid=False / Ready=False with
the reason. It prints the conditions (KEP-1645: Valid, Ready, Conflict) and exits 1 unless the
export is Ready. Exporting a Service that is already exported only reports.`,
		Example: `  kubectl clusterset export nginx-hello -n demo
  kubectl clusterset export nginx-hello -n demo --context east --wait 0`,
	}, "for the export to be Ready", export)
}

// serviceCommand completes cmd, a command on one SERVICE of one cluster:
// its kubectl flags and --wait, and a RunE that calls run with the
// context's client and the SERVICE's key in -n (or the context's
// namespace).
func serviceCommand(cmd *cobra.Command, waitFor string, run func(context.Context, io.Writer, client.Client, client.ObjectKey, time.Duration) error) *cobra.Command {
	f := addSingleClusterFlags(cmd, waitFor)
	cmd.Args = cobra.ExactArgs(1)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, ns, err := f.client()
		if err != nil {
			return err
		}
		return run(cmd.Context(), cmd.OutOrStdout(), c, client.ObjectKey{Namespace: ns, Name: args[0]}, f.wait)
	}
	return cmd
}

func export(ctx context.Context, out io.Writer, c client.Client, key client.ObjectKey, timeout time.Duration) error {
	se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	switch err := c.Create(ctx, se); {
	case apierrors.IsAlreadyExists(err):
		var cur mcsv1beta1.ServiceExport
		if err := c.Get(ctx, key, &cur); err == nil && cur.DeletionTimestamp != nil {
			return fmt.Errorf("serviceexport %s is being deleted (its record is being withdrawn); export it again once it is gone", key)
		}
		fmt.Fprintf(out, "serviceexport %s already exists\n", key)
	case err != nil:
		return fmt.Errorf("creating ServiceExport %s: %w", key, err)
	default:
		fmt.Fprintf(out, "serviceexport %s created\n", key)
	}
	if timeout <= 0 {
		return nil
	}
	// Judged: Ready=True, or a condition that will not change by itself.
	var last mcsv1beta1.ServiceExport
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, &last); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if last.DeletionTimestamp != nil {
			return false, fmt.Errorf("serviceexport %s is being deleted", key)
		}
		if meta.IsStatusConditionTrue(last.Status.Conditions, string(mcsv1beta1.ServiceExportConditionReady)) {
			return true, nil
		}
		return meta.IsStatusConditionFalse(last.Status.Conditions, string(mcsv1beta1.ServiceExportConditionValid)), nil
	})
	printConditions(out, last.Status.Conditions)
	switch {
	case err == nil && meta.IsStatusConditionTrue(last.Status.Conditions, string(mcsv1beta1.ServiceExportConditionReady)):
		fmt.Fprintf(out, "%s is exported: `kubectl clusterset status %s -n %s` shows it in every cluster\n", key, key.Name, key.Namespace)
		return nil
	case errors.Is(err, context.DeadlineExceeded) || wait.Interrupted(err):
		if len(last.Status.Conditions) == 0 {
			return fmt.Errorf("no controller reported on %s within %s: is clusterset-controller running? (`kubectl clusterset doctor`)", key, timeout)
		}
		return fmt.Errorf("%s is not Ready after %s", key, timeout)
	case err != nil:
		return err
	}
	return fmt.Errorf("%s is not valid for export", key)
}

func newUnexportCommand() *cobra.Command {
	return serviceCommand(&cobra.Command{
		Use:   "unexport SERVICE",
		Short: "Withdraw a Service from the clusterset (delete its ServiceExport) and wait until its record is gone",
		Long: `unexport deletes the ServiceExport of SERVICE in -n (or the context's namespace). The controller
withdraws this cluster's record from the registry before it lets the ServiceExport go, so unexport
waits up to --wait for the object to disappear, and exits 1 when it does not.`,
		Example: `  kubectl clusterset unexport nginx-hello -n demo`,
	}, "for the record to be withdrawn", unexport)
}

func unexport(ctx context.Context, out io.Writer, c client.Client, key client.ObjectKey, timeout time.Duration) error {
	se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	switch err := c.Delete(ctx, se); {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("serviceexport %s does not exist", key)
	case err != nil:
		return fmt.Errorf("deleting ServiceExport %s: %w", key, err)
	}
	fmt.Fprintf(out, "serviceexport %s deleted\n", key)
	if timeout <= 0 {
		return nil
	}
	var last mcsv1beta1.ServiceExport
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, key, &last)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil && !wait.Interrupted(err) {
		return fmt.Errorf("waiting for %s to be withdrawn: %w", key, err)
	}
	if err != nil {
		printConditions(out, last.Status.Conditions)
		return fmt.Errorf("%s is still being withdrawn after %s (finalizers %v): is the registry reachable? (`kubectl clusterset doctor`)", key, timeout, last.Finalizers)
	}
	fmt.Fprintf(out, "%s is withdrawn from the registry\n", key)
	return nil
}

func printConditions(out io.Writer, conds []metav1.Condition) {
	if len(conds) == 0 {
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CONDITION\tSTATUS\tREASON\tMESSAGE")
	for _, c := range inspect.Conditions(conds) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	w.Flush()
}
