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
