package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"
)

// shippedKubernetesBlock returns the `kubernetes ... { ... }` block of the
// Corefile that the project ships in config/coredns, so that the sandbox
// serves DNS with exactly what users deploy.
func shippedKubernetesBlock(repoDir string) ([]string, error) {
	file := filepath.Join(repoDir, "config", "coredns", "Corefile")
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var block []string
	depth := 0
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if depth == 0 {
			if strings.HasPrefix(t, "kubernetes ") && strings.HasSuffix(t, "{") {
				block = append(block, t)
				depth = 1
			}
			continue
		}
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		depth += strings.Count(t, "{") - strings.Count(t, "}")
		block = append(block, t)
		if depth == 0 {
			return block, nil
		}
	}
	return nil, fmt.Errorf("%s: no complete `kubernetes ... {` block", file)
}

// sandboxCorefile is the shipped kubernetes block inside a server block that
// binds 127.0.0.1 only and reaches the API server through a kubeconfig. It
// has no forward plugin (no traffic leaves 127.0.0.0/8) and no cache, so
// tests see changes as soon as the plugin does.
func sandboxCorefile(block []string, port, readyPort int, kubeconfig, context string) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".:%d {\n", port)
	b.WriteString("    bind 127.0.0.1\n")
	b.WriteString("    errors\n")
	fmt.Fprintf(&b, "    ready 127.0.0.1:%d\n", readyPort)
	for i, line := range block {
		indent := "        "
		if i == 0 || i == len(block)-1 {
			indent = "    "
		}
		b.WriteString(indent + line + "\n")
		if i == 0 {
			fmt.Fprintf(&b, "        kubeconfig %s %s\n", kubeconfig, context)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// Query asks a DNS server (host:port) one question over UDP, retrying over
// TCP when the answer is truncated.
func Query(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, server)
	}
	return r, err
}

// QueryA asks a DNS server (host:port) for the A records of name over UDP and
// returns the rcode and the addresses.
func QueryA(ctx context.Context, server, name string) (rcode int, addrs []net.IP, err error) {
	r, err := Query(ctx, server, name, dns.TypeA)
	if err != nil {
		return 0, nil, err
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A)
		}
	}
	return r.Rcode, addrs, nil
}

// kubeadmCorefile is the Corefile a kubeadm cluster starts with: cluster.local
// only. The sandbox patches it with config/coredns/corefile-patch.yaml, as
// docs tell users to.
const kubeadmCorefile = `.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
`

// startInClusterDNS runs CoreDNS on the real node as a kubeadm cluster does
// (ConfigMap kube-system/coredns, a Deployment, the kube-dns Service at
// dnsServiceIP, the resolver of every pod), then makes it serve
// clusterset.local the way a user does: the RBAC of config/coredns
// (corednsIdentity) and the ConfigMap patched with
// config/coredns/corefile-patch.yaml. The patch is applied before the
// Deployment exists, so CoreDNS starts with it instead of reloading.
func (s *Sandbox) startInClusterDNS(ctx context.Context, env *upEnv, cl *clients, c *Cluster, step func(string, ...any)) error {
	cm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "coredns", "namespace": "kube-system"},
		"data":     map[string]any{"Corefile": kubeadmCorefile},
	}}
	if err := cl.apply(ctx, "kube-system", cm); err != nil {
		return fmt.Errorf("in-cluster CoreDNS: %w", err)
	}
	patchFile := filepath.Join(env.opts.RepoDir, "config", "coredns", "corefile-patch.yaml")
	patchYAML, err := os.ReadFile(patchFile)
	if err != nil {
		return err
	}
	patch, err := yaml.YAMLToJSON(patchYAML)
	if err != nil {
		return fmt.Errorf("%s: %w", patchFile, err)
	}
	if _, err := cl.kube.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-patch"}); err != nil {
		return fmt.Errorf("kubectl -n kube-system patch configmap coredns --patch-file %s: %w", patchFile, err)
	}
	objs := []map[string]any{
		{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": "coredns", "namespace": "kube-system", "labels": map[string]any{"k8s-app": "kube-dns"}},
			"spec": map[string]any{
				"replicas": 1,
				"selector": map[string]any{"matchLabels": map[string]any{"k8s-app": "kube-dns"}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": map[string]any{"k8s-app": "kube-dns"}},
					"spec": map[string]any{
						"serviceAccountName": "coredns",
						"dnsPolicy":          "Default",
						"securityContext": map[string]any{
							"runAsNonRoot": true,
							// Port 53 without any capability.
							"sysctls": []any{map[string]any{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}},
						},
						"containers": []any{map[string]any{
							"name": "coredns", "image": ImageCoreDNS, "imagePullPolicy": "Never",
							"args":           []any{"-conf", "/etc/coredns/Corefile"},
							"readinessProbe": map[string]any{"httpGet": map[string]any{"path": "/ready", "port": 8181}, "periodSeconds": 2},
							"livenessProbe":  map[string]any{"httpGet": map[string]any{"path": "/health", "port": 8080}, "periodSeconds": 10},
							// The Corefile's `prometheus :9153`.
							"ports": []any{
								map[string]any{"name": "dns", "containerPort": 53, "protocol": "UDP"},
								map[string]any{"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
								map[string]any{"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
							},
							"securityContext": map[string]any{
								"allowPrivilegeEscalation": false,
								"readOnlyRootFilesystem":   true,
								"capabilities":             map[string]any{"drop": []any{"ALL"}},
							},
							"volumeMounts": []any{map[string]any{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}},
						}},
						"volumes": []any{map[string]any{"name": "config", "configMap": map[string]any{"name": "coredns"}}},
					},
				},
			},
		},
		{
			"apiVersion": "v1", "kind": "Service",
			"metadata": map[string]any{"name": "kube-dns", "namespace": "kube-system", "labels": map[string]any{"k8s-app": "kube-dns"}},
			"spec": map[string]any{
				"clusterIP": dnsServiceIP(c),
				"selector":  map[string]any{"k8s-app": "kube-dns"},
				"ports": []any{
					map[string]any{"name": "dns", "port": 53, "protocol": "UDP"},
					map[string]any{"name": "dns-tcp", "port": 53, "protocol": "TCP"},
				},
			},
		},
	}
	var us []*unstructured.Unstructured
	for _, o := range objs {
		us = append(us, &unstructured.Unstructured{Object: o})
	}
	if err := cl.apply(ctx, "kube-system", us...); err != nil {
		return fmt.Errorf("in-cluster CoreDNS: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, dnsTimeout, true, func(ctx context.Context) (bool, error) {
		d, err := cl.kube.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas >= 1, nil
	})
	if err != nil {
		return fmt.Errorf("in-cluster CoreDNS not ready after %s: %w (kubectl -n kube-system describe pod -l k8s-app=kube-dns)", dnsTimeout, err)
	}
	step("CoreDNS pod ready behind kube-dns %s (Corefile patched with config/coredns/corefile-patch.yaml)", dnsServiceIP(c))
	return nil
}
