package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"

	"github.com/clusterset/clusterset/pkg/sandbox"
)

func newSandboxCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run a local clusterset: several real control planes with real or kwok nodes, CoreDNS and the controllers",
		Long: `sandbox runs N local clusters (cls1…clsN) on this machine without Docker: per cluster
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, CoreDNS with the multicluster
plugin, a clusterset-controller, and one node:

  --nodes real  a real node (containerd and runc, kubelet, kube-proxy, CNI bridge) in a network
                namespace of its own, routed to the other clusters' nodes and pods and to nothing
                else: pods run and traffic flows through ClusterSetIPs. Needs Linux and root.
  --nodes kwok  a kwok node whose pods become Running with IPs from the cluster's pod CIDR;
                pod and Service IPs are data only.

Without --nodes, up uses real nodes where they can run and says why it chose kwok otherwise.
The control planes listen on 127.0.0.1. The component binaries come from
hack/build-binaries.sh sandbox (and node), the images from make images.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", sandbox.DefaultDir(), "directory of the sandbox's state, kubeconfig and logs (env CLUSTERSET_SANDBOX_DIR)")
	cmd.AddCommand(newSandboxUpCommand(&dir), newSandboxDownCommand(&dir), newSandboxEnvCommand(&dir), newSandboxStatusCommand(&dir), newSandboxDNSCommand(&dir), newSandboxLoadImageCommand(&dir))
	return cmd
}

func newSandboxUpCommand(dir *string) *cobra.Command {
	var opts sandbox.Options
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the sandbox (stops the leftovers of a crashed one first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Dir = *dir
			opts.Out = cmd.ErrOrStderr()
			s, err := sandbox.Up(cmd.Context(), opts)
			if err != nil {
				return err
			}
			printSummary(cmd.OutOrStdout(), s)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.Clusters, "clusters", 2, "number of clusters, named cls1…clsN")
	f.StringVar(&opts.Registry, "registry", sandbox.RegistryHub, "registry backend of the controllers: hub (cls1's API server) or cloudmap (a local moto server)")
	f.StringVar(&opts.ClusterSetID, "clusterset-id", sandbox.DefaultClusterSetID, "clusterset ID of every cluster")
	f.StringVar(&opts.ControllerBinary, "controller-binary", "", "clusterset-controller to run (default: go build ./cmd/clusterset-controller when it exists)")
	f.BoolVar(&opts.SkipControllers, "no-controllers", false, "start no clusterset-controller")
	f.StringArrayVar(&opts.ControllerArgs, "controller-arg", nil, "extra argument for every controller (repeatable)")
	f.StringVar(&opts.Install, "install", sandbox.InstallKustomize, "how real nodes get the controller: kustomize (config/overlays/REGISTRY) or helm (charts/clusterset)")
	f.StringVar(&opts.BinDir, "bin-dir", "", "directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and coredns (default: env CLUSTERSET_SANDBOX_BIN, else REPO/.cache/sandbox)")
	f.StringVar(&opts.RepoDir, "repo", "", "clusterset repository whose config/ is installed (default: found from the working directory)")
	f.StringVar(&opts.Nodes, "nodes", "", "node mode: real (containerd, kubelet, kube-proxy in a network namespace) or kwok (default: real where it can run)")
	f.StringVar(&opts.NodeBinDir, "node-bin-dir", "", "directory with kubelet, kube-proxy and cni-plugins/ (default: REPO/.cache/node)")
	f.StringVar(&opts.ImagesDir, "images-dir", "", "image tarballs every real node imports (default: REPO/.cache/images, built by make images when missing)")
	f.BoolVar(&opts.Recreate, "recreate", false, "replace a sandbox that is running in --dir")
	f.BoolVar(&opts.KeepOnFailure, "keep-on-failure", false, "leave the processes running when up fails, for inspection")
	return cmd
}

func newSandboxDownCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop exactly the processes the sandbox started and remove its state (logs are kept)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			s, err := sandbox.Load(*dir)
			if errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(cmd.ErrOrStderr(), "no sandbox in %s\n", *dir)
				return nil
			}
			if err != nil {
				return err
			}
			s.Dir = *dir
			running, _ := s.Running()
			// Stopping must finish even after a Ctrl-C, or it would leave
			// half a sandbox behind.
			if err := s.Down(context.WithoutCancel(cmd.Context())); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "sandbox in %s down: stopped %d process(es) in %.1fs; logs kept in %s/logs\n",
				*dir, len(running), time.Since(start).Seconds(), *dir)
			return nil
		},
	}
}

func newSandboxEnvCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "Print shell exports for the sandbox: eval \"$(kubectl clusterset sandbox env)\"",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := sandbox.Load(*dir)
			if err != nil {
				return err
			}
			printEnv(cmd.OutOrStdout(), s)
			return nil
		},
	}
}

func newSandboxStatusCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the sandbox's clusters and whether each of its processes still runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := sandbox.Load(*dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			printSummary(out, s)
			running, gone := s.Running()
			alive := map[int]bool{}
			for _, p := range running {
				alive[p.PID] = true
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "\nPROCESS\tPID\tSTATE\tLOG")
			for _, p := range s.Processes {
				state := "running"
				if !alive[p.PID] {
					state = "GONE"
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", p.Name, p.PID, state, p.Log)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(gone) > 0 {
				return fmt.Errorf("%d of %d sandbox processes are gone", len(gone), len(s.Processes))
			}
			return nil
		},
	}
}

func printSummary(out io.Writer, s *sandbox.Sandbox) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTER\tAPI SERVER\tDNS (udp+tcp)\tPOD CIDR\tSERVICE CIDR")
	for _, c := range s.Clusters {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Server, c.DNS, c.PodCIDR, c.ServiceCIDR)
	}
	_ = w.Flush()
	registry := s.Registry
	switch {
	case s.HubCluster != "":
		registry += " (on " + s.HubCluster + ")"
	case s.MotoEndpoint != "":
		registry += " (moto at " + s.MotoEndpoint + ")"
	}
	controllers := "running"
	if !s.Controllers {
		controllers = "not started"
	}
	fmt.Fprintf(out, "clusterset %s, registry %s, clusterset-controllers %s\n", s.ClusterSetID, registry, controllers)
	if len(s.Clusters) > 0 {
		c := s.Clusters[0]
		host, port, _ := strings.Cut(c.DNS, ":")
		fmt.Fprintf(out, "\n  export KUBECONFIG=%s\n  kubectl --context %s get nodes\n  dig @%s -p %s kubernetes.default.svc.cluster.local\n", s.Kubeconfig, c.Name, host, port)
	}
}

func printEnv(out io.Writer, s *sandbox.Sandbox) {
	fmt.Fprintf(out, "export KUBECONFIG=%s\n", shellQuote(s.Kubeconfig))
	fmt.Fprintf(out, "export CLUSTERSET_SANDBOX_DIR=%s\n", shellQuote(s.Dir))
	fmt.Fprintf(out, "export CLUSTERSET_SANDBOX_CLUSTERS=%s\n", shellQuote(strings.Join(s.ClusterNames(), " ")))
	for _, c := range s.Clusters {
		fmt.Fprintf(out, "export CLUSTERSET_SANDBOX_DNS_%s=%s\n", strings.ToUpper(c.Name), c.DNS)
	}
	for _, kv := range s.AWSEnv() {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(out, "export %s=%s\n", k, shellQuote(v))
	}
	fmt.Fprintln(out, "# kubectl --context clsI ...; dig @127.0.0.1 -p ${CLUSTERSET_SANDBOX_DNS_CLS1#*:} NAME")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:,+=@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func newSandboxDNSCommand(dir *string) *cobra.Command {
	var qtype string
	cmd := &cobra.Command{
		Use:   "dns CLUSTER NAME",
		Short: "Ask a sandbox cluster's CoreDNS, like dig: dns cls2 nginx-hello.demo.svc.clusterset.local",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sandbox.Load(*dir)
			if err != nil {
				return err
			}
			c := s.Cluster(args[0])
			if c == nil {
				return fmt.Errorf("no cluster %q in the sandbox (have %s)", args[0], strings.Join(s.ClusterNames(), ", "))
			}
			t, ok := dns.StringToType[strings.ToUpper(qtype)]
			if !ok {
				return fmt.Errorf("unknown query type %q", qtype)
			}
			r, err := sandbox.Query(cmd.Context(), c.DNS, args[1], t)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, ";; %s's CoreDNS at %s: %s\n", c.Name, c.DNS, dns.RcodeToString[r.Rcode])
			for _, rr := range r.Answer {
				fmt.Fprintln(out, rr.String())
			}
			for _, rr := range r.Extra {
				fmt.Fprintln(out, rr.String())
			}
			if r.Rcode != dns.RcodeSuccess {
				return fmt.Errorf("%s %s: %s", args[1], strings.ToUpper(qtype), dns.RcodeToString[r.Rcode])
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&qtype, "type", "t", "A", "query type: A, AAAA, SRV, ...")
	return cmd
}

func newSandboxLoadImageCommand(dir *string) *cobra.Command {
	var clusters []string
	cmd := &cobra.Command{
		Use:   "load-image TARBALL",
		Short: "Import an image tarball (docker save or OCI) into the real nodes, like kind load image-archive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sandbox.Load(*dir)
			if err != nil {
				return err
			}
			s.Dir = *dir
			if err := s.LoadImage(cmd.Context(), args[0], clusters...); err != nil {
				return err
			}
			names := clusters
			if len(names) == 0 {
				names = s.ClusterNames()
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "loaded %s into %s\n", args[0], strings.Join(names, ", "))
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&clusters, "cluster", nil, "cluster(s) to load into (default: all)")
	return cmd
}
