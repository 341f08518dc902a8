// Command demo runs the seed walkthrough on a running sandbox and prints what
// a user wants to see: the ServiceExport's conditions in cls1, cls2's
// ServiceImport and EndpointSlices, and cls2's CoreDNS answer for
// nginx-hello.demo.svc.clusterset.local, which must equal cls2's
// ServiceImport IP (exit status 1 otherwise). hack/demo.sh (`make demo`)
// starts the sandbox and runs it:
//
//	go run ./test/e2e/cmd/demo --dir .cache/demo
//
// On real nodes it then ends like the seed: a client pod in cls2 resolves the
// name and sends requests to it, and every one of cls1's pods must answer
// (exit status 1 otherwise).
//
// It needs no kubectl: it talks to the sandbox's API servers with client-go
// (kubectl exec's protocol for the client pod) and to its CoreDNS servers on
// 127.0.0.1 with a DNS client.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

func main() {
	dir := flag.String("dir", sandbox.DefaultDir(), "directory of the running sandbox")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for the import")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *dir, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		fmt.Fprintf(os.Stderr, "logs of every sandbox process: %s\n", filepath.Join(*dir, "logs"))
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, dir string, timeout time.Duration) error {
	s, err := sandbox.Load(dir)
	if err != nil {
		return err
	}
	if _, gone := s.Running(); len(gone) > 0 {
		return fmt.Errorf("%d sandbox process(es) are not running (first: %s); restart it with hack/demo.sh", len(gone), gone[0].Name)
	}
	if !s.Controllers {
		return fmt.Errorf("the sandbox in %s runs no clusterset-controller", dir)
	}
	for _, c := range []string{wt.Exporter, wt.Importer} {
		if s.Cluster(c) == nil {
			return fmt.Errorf("the sandbox has no cluster %s (it has %s)", c, strings.Join(s.ClusterNames(), ", "))
		}
	}
	env, err := wt.New(s)
	if err != nil {
		return err
	}

	step(out, "%s, %s: namespace %s", wt.Exporter, wt.Importer, wt.Namespace)
	if err := env.CreateNamespace(ctx, wt.Namespace, wt.Exporter, wt.Importer); err != nil {
		return err
	}
	how := "kwok simulates the pods, nothing runs"
	if env.RealNodes() {
		how = "real pods on cls1's node, image imported by the sandbox"
	}
	step(out, "%s: Deployment %s (%d replicas of image %s; %s)", wt.Exporter, wt.Service, wt.Replicas, wt.Image, how)
	step(out, "%s: Service %s (%s %d/TCP -> targetPort %s = %d) and ServiceExport %s", wt.Exporter, wt.Service, wt.PortName, wt.Port, wt.PortName, wt.TargetPort, wt.Service)
	if err := env.Create(ctx, wt.Exporter, wt.SeedObjects()...); err != nil {
		return err
	}

	step(out, "waiting for %s to import %s/%s (at most %s)", wt.Importer, wt.Namespace, wt.Service, timeout)
	start := time.Now()
	progress := func(elapsed time.Duration, state string) {
		fmt.Fprintf(out, "    [%5.1fs] %s\n", elapsed.Seconds(), state)
	}
	waitErr := wt.Wait(ctx, "the walkthrough", timeout, 250*time.Millisecond, progress, env.SeedReady(wt.Replicas))
	if waitErr == nil {
		fmt.Fprintf(out, "    imported and answered by DNS %.1fs after the export\n", time.Since(start).Seconds())
	}

	// Show what there is, complete or not: on a failure it is the evidence.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	answer, err := report(rctx, out, env)
	if err != nil {
		return err
	}
	if waitErr != nil {
		return waitErr
	}
	fmt.Fprintf(out, "\nOK: %s's CoreDNS answers %s with %s, the IP of %s's ServiceImport.\n",
		wt.Importer, wt.FQDN(wt.Service, wt.Namespace), strings.Join(answer, ", "), wt.Importer)
	if !env.RealNodes() {
		fmt.Fprintf(out, "\n(kwok nodes: the pods are simulated, so no request is sent. Real nodes need root on Linux: sandbox up --nodes real.)\n")
		return nil
	}
	return traffic(ctx, out, env, answer)
}

// traffic is the end of the seed walkthrough: from a client pod in cls2, the
// clusterset name resolves to cls2's ServiceImport IP, and requests to it are
// answered by cls1's pods. It fails unless every one of them answered.
func traffic(ctx context.Context, out io.Writer, env *wt.Env, vip []string) error {
	name := wt.FQDN(wt.Service, wt.Namespace)
	step(out, "%s: pod %s (image %s)", wt.Importer, wt.ClientPod, sandbox.ImageClient)
	if err := env.Create(ctx, wt.Importer, wt.ClientPodObject(wt.Namespace)); err != nil {
		return err
	}
	if err := env.WaitPodReady(ctx, wt.Importer, wt.Namespace, wt.ClientPod, 2*time.Minute); err != nil {
		return err
	}
	section(out, "%s: kubectl exec %s -- nslookup %s", wt.Importer, wt.ClientPod, name)
	stdout, stderr, err := env.Exec(ctx, wt.Importer, wt.Namespace, wt.ClientPod, "nslookup", name)
	fmt.Fprint(out, indent(stdout+stderr))
	if err != nil {
		return fmt.Errorf("nslookup in %s: %w", wt.ClientPod, err)
	}
	addrs, err := env.Nslookup(ctx, wt.Importer, wt.Namespace, wt.ClientPod, name)
	if err != nil {
		return err
	}
	if !slices.Equal(addrs, vip) {
		return fmt.Errorf("inside %s, %s resolves to %v, not to the ServiceImport IP %v", wt.ClientPod, name, addrs, vip)
	}

	pods, err := env.ReadyPods(ctx, wt.Exporter, wt.Namespace, wt.Service)
	if err != nil {
		return err
	}
	section(out, "%s: HTTP GET http://%s:%d from inside %s (kubectl exec, nc); each answer is the name of the pod that served it", wt.Importer, name, wt.Port, wt.ClientPod)
	seen := map[string]int{}
	// At least 9 requests; more (up to 30) while a pod has not answered:
	// kube-proxy picks a backend at random for each connection.
	for i := 1; i <= 30 && (i <= 9 || len(seen) < len(pods)); i++ {
		body, err := env.HTTPGet(ctx, wt.Importer, wt.Namespace, wt.ClientPod, name, wt.Port)
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		where := "NOT a pod of " + wt.Exporter
		if p, ok := pods[body]; ok {
			where = fmt.Sprintf("%s, pod IP %s", wt.Exporter, p.Status.PodIP)
		}
		fmt.Fprintf(out, "    request %2d: %s  (%s)\n", i, body, where)
		seen[body]++
	}
	var missing []string
	for name := range pods {
		if seen[name] == 0 {
			missing = append(missing, name)
		}
	}
	for body := range seen {
		if _, ok := pods[body]; !ok {
			return fmt.Errorf("%q answered, which is not one of %s's pods", body, wt.Exporter)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s's pods %v never answered", wt.Exporter, missing)
	}
	fmt.Fprintf(out, "\nOK: all %d pods of %s answered requests sent from %s to %s.\n", len(pods), wt.Exporter, wt.Importer, name)
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}

func step(out io.Writer, format string, args ...any) {
	fmt.Fprintf(out, "==> "+format+"\n", args...)
}

func section(out io.Writer, format string, args ...any) {
	fmt.Fprintf(out, "\n--- "+format+"\n", args...)
}

// report prints the export's conditions, cls2's import and its DNS answer,
// and fails when the answer is not cls2's ServiceImport IP. It returns the
// answer's addresses.
func report(ctx context.Context, out io.Writer, env *wt.Env) ([]string, error) {
	se, err := env.GetExport(ctx, wt.Exporter, wt.Namespace, wt.Service)
	if err != nil {
		return nil, err
	}
	section(out, "%s: ServiceExport %s/%s", wt.Exporter, wt.Namespace, wt.Service)
	if se == nil {
		fmt.Fprintln(out, "(none)")
	} else {
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CONDITION\tSTATUS\tREASON\tMESSAGE")
		for _, c := range se.Status.Conditions {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, c.Message)
		}
		_ = w.Flush()
	}

	imp, err := env.GetImport(ctx, wt.Importer, wt.Namespace, wt.Service)
	if err != nil {
		return nil, err
	}
	section(out, "%s: ServiceImport %s/%s", wt.Importer, wt.Namespace, wt.Service)
	if si := imp.ServiceImport; si == nil {
		fmt.Fprintln(out, "(none)")
	} else {
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "type:\t%s\n", si.Spec.Type)
		derived := ""
		if imp.Derived != nil {
			derived = fmt.Sprintf("   (the VIP of derived Service %s, %s in %s)", imp.Derived.Name, imp.Derived.Spec.Type, wt.Importer)
		}
		fmt.Fprintf(w, "ips:\t%s%s\n", strings.Join(si.Spec.IPs, ", "), derived)
		fmt.Fprintf(w, "ports:\t%s\n", ports(si.Spec.Ports))
		fmt.Fprintf(w, "clusters:\t%s\n", strings.Join(imp.Clusters(), ", "))
		for _, c := range si.Status.Conditions {
			fmt.Fprintf(w, "condition:\t%s=%s (%s: %s)\n", c.Type, c.Status, c.Reason, c.Message)
		}
		_ = w.Flush()
	}

	section(out, "%s: EndpointSlices of %s/%s", wt.Importer, wt.Namespace, wt.Service)
	if len(imp.Slices) == 0 {
		fmt.Fprintln(out, "(none)")
	}
	for _, s := range imp.Slices {
		var addrs []string
		for _, ep := range s.Endpoints {
			a := strings.Join(ep.Addresses, ",")
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				a += " (not ready)"
			}
			addrs = append(addrs, a)
		}
		var sp []string
		for _, p := range s.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name + " "
			}
			port, proto := int32(0), ""
			if p.Port != nil {
				port = *p.Port
			}
			if p.Protocol != nil {
				proto = string(*p.Protocol)
			}
			sp = append(sp, fmt.Sprintf("%s%d/%s", name, port, proto))
		}
		fmt.Fprintf(out, "%s  (%s, ports %s)\n", s.Name, s.AddressType, strings.Join(sp, ", "))
		note := "routed between the clusters' nodes, as in a peered VPC"
		if !env.RealNodes() {
			note = "data only: kwok pods do not run, nothing routes them"
		}
		fmt.Fprintf(out, "  addresses: %s   (pod IPs in %s: %s)\n", strings.Join(addrs, " "), s.Labels[mcsv1beta1.LabelSourceCluster], note)
		fmt.Fprintln(out, "  labels:")
		keys := make([]string, 0, len(s.Labels))
		for k := range s.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(out, "    %s=%s\n", k, s.Labels[k])
		}
	}

	if own, err := env.GetImport(ctx, wt.Exporter, wt.Namespace, wt.Service); err == nil && own.ServiceImport != nil {
		fmt.Fprintf(out, "\n(%s, the exporter, imports it too: ServiceImport ips %s, %d endpoint(s))\n",
			wt.Exporter, strings.Join(own.IPs(), ", "), len(own.Endpoints()))
	}

	name := wt.FQDN(wt.Service, wt.Namespace)
	section(out, "%s's CoreDNS (%s): %s A", wt.Importer, env.DNS(wt.Importer), name)
	ans, err := env.Query(ctx, wt.Importer, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, ";; %s\n", ans.RcodeString())
	for _, rr := range ans.RRs {
		fmt.Fprintln(out, rr)
	}
	want := slices.Clone(imp.IPs())
	sort.Strings(want)
	if ans.Rcode != dns.RcodeSuccess || len(want) == 0 || !slices.Equal(ans.A, want) {
		return nil, fmt.Errorf("%s's CoreDNS answered %s A with %s %v, but %s's ServiceImport has ips %v",
			wt.Importer, name, ans.RcodeString(), ans.A, wt.Importer, want)
	}
	return ans.A, nil
}

func ports(ps []mcsv1beta1.ServicePort) string {
	var out []string
	for _, p := range ps {
		s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.Name != "" {
			s = p.Name + " " + s
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}
