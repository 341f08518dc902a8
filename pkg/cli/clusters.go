package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/pkg/inspect"
)

// clustersFlags are the flags of the commands that look at several member
// clusters at once: kubectl's own (--kubeconfig, --context, -n, ...),
// --contexts, -A and -o.
type clustersFlags struct {
	config              *genericclioptions.ConfigFlags
	contexts            []string
	allNamespaces       bool
	output              string
	controllerNamespace string
}

func addClustersFlags(cmd *cobra.Command, namespaced bool) *clustersFlags {
	f := &clustersFlags{config: genericclioptions.NewConfigFlags(true)}
	f.config.AddFlags(cmd.Flags())
	cmd.Flags().StringSliceVar(&f.contexts, "contexts", nil, "kubeconfig contexts of the member clusters (default: --context if set, else every context that serves the ServiceExport API)")
	if namespaced {
		cmd.Flags().BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "every namespace")
	}
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table, json or yaml")
	return f
}

// addControllerNamespace adds --controller-namespace, for the commands that
// read the controller's installation (status SERVICE, doctor).
func (f *clustersFlags) addControllerNamespace(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.controllerNamespace, "controller-namespace", "", "namespace of clusterset-controller in every member (default: where a Deployment labelled "+inspect.ControllerLabel+"="+inspect.ControllerName+" is, else "+inspect.ControllerNamespace+")")
}

// namespace is -n, the context's namespace, or "" with -A.
func (f *clustersFlags) namespace() (string, error) {
	if f.allNamespaces {
		return "", nil
	}
	ns, _, err := f.config.ToRawKubeConfigLoader().Namespace()
	return ns, err
}

// members returns the member clusters of raw to read. Without --contexts and
// --context it takes every context of the kubeconfig and, once read, keeps
// those that serve the ServiceExport API (see read).
func (f *clustersFlags) members(raw clientcmdapi.Config) (ms []inspect.Member, guessed bool, err error) {
	if err := validOutput(f.output); err != nil {
		return nil, false, err
	}
	names := f.contexts
	if len(names) == 0 && f.config.Context != nil && *f.config.Context != "" {
		names = []string{*f.config.Context}
	}
	if len(names) == 0 {
		for name := range raw.Contexts {
			names = append(names, name)
		}
		slices.Sort(names)
		guessed = true
	}
	if len(names) == 0 {
		return nil, false, fmt.Errorf("the kubeconfig has no contexts; pass --kubeconfig or --contexts")
	}
	overrides, err := f.overrides(len(names))
	if err != nil {
		return nil, false, err
	}
	for _, name := range names {
		if _, ok := raw.Contexts[name]; !ok {
			return nil, false, fmt.Errorf("context %q is not in the kubeconfig", name)
		}
		cfg, err := clientcmd.NewNonInteractiveClientConfig(raw, name, overrides, nil).ClientConfig()
		if err != nil {
			return nil, false, fmt.Errorf("context %s: %w", name, err)
		}
		ms = append(ms, inspect.Member{Context: name, Config: cfg})
	}
	return ms, guessed, nil
}

// overrides carries kubectl's flags that apply to every context (the user
// to act as, a token, timeouts, TLS verification). Flags that pick one
// server, cluster or user make no sense with several contexts.
func (f *clustersFlags) overrides(contexts int) (*clientcmd.ConfigOverrides, error) {
	o := &clientcmd.ConfigOverrides{}
	c := f.config
	if contexts > 1 {
		for flag, v := range map[string]*string{"--server": c.APIServer, "--cluster": c.ClusterName, "--user": c.AuthInfoName} {
			if v != nil && *v != "" {
				return nil, fmt.Errorf("%s picks one cluster or user; it cannot apply to %d contexts (set it in each context instead)", flag, contexts)
			}
		}
	}
	if c.APIServer != nil {
		o.ClusterInfo.Server = *c.APIServer
	}
	if c.ClusterName != nil {
		o.Context.Cluster = *c.ClusterName
	}
	if c.AuthInfoName != nil {
		o.Context.AuthInfo = *c.AuthInfoName
	}
	if c.Insecure != nil && *c.Insecure {
		o.ClusterInfo.InsecureSkipTLSVerify = true
	}
	if c.TLSServerName != nil {
		o.ClusterInfo.TLSServerName = *c.TLSServerName
	}
	if c.BearerToken != nil {
		o.AuthInfo.Token = *c.BearerToken
	}
	if c.Impersonate != nil {
		o.AuthInfo.Impersonate = *c.Impersonate
	}
	if c.ImpersonateUID != nil {
		o.AuthInfo.ImpersonateUID = *c.ImpersonateUID
	}
	if c.ImpersonateGroup != nil {
		o.AuthInfo.ImpersonateGroups = *c.ImpersonateGroup
	}
	if c.Timeout != nil {
		o.Timeout = *c.Timeout
	}
	return o, nil
}

// read reads the members; when they were guessed from the kubeconfig, it
// keeps those that serve the ServiceExport API and says which it left out.
func (f *clustersFlags) read(ctx context.Context, errOut io.Writer, o inspect.ReadOptions) ([]*inspect.Cluster, error) {
	raw, err := f.config.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, err
	}
	ms, guessed, err := f.members(raw)
	if err != nil {
		return nil, err
	}
	o.ControllerNamespace = f.controllerNamespace
	clusters := inspect.Read(ctx, ms, o)
	// Two contexts of one cluster (an admin and a user context, say) are
	// one member.
	byUID := map[string]string{}
	clusters = slices.DeleteFunc(clusters, func(cl *inspect.Cluster) bool {
		if cl.UID == "" {
			return false
		}
		if first, ok := byUID[cl.UID]; ok {
			fmt.Fprintf(errOut, "left out context %s: it reaches the same cluster as context %s\n", cl.Context, first)
			return true
		}
		byUID[cl.UID] = cl.Context
		return false
	})
	if o.Registry || o.Health {
		inspect.PreferReachableHub(ctx, clusters, servers(raw))
	}
	if !guessed {
		return clusters, nil
	}
	var kept []*inspect.Cluster
	var left []string
	for _, cl := range clusters {
		if cl.Problem == "" && !slices.ContainsFunc(cl.MissingAPIs, func(api string) bool { return strings.HasPrefix(api, "serviceexports.") }) {
			kept = append(kept, cl)
		} else {
			left = append(left, cl.Context)
		}
	}
	if len(left) > 0 {
		fmt.Fprintf(errOut, "left out contexts that cannot be read or serve no ServiceExports: %s (name members with --contexts)\n", strings.Join(left, ", "))
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("no context of the kubeconfig serves ServiceExports; pass --contexts")
	}
	return kept, nil
}

// servers lists the API servers of the kubeconfig with their CAs.
func servers(raw clientcmdapi.Config) []inspect.Server {
	var out []inspect.Server
	for _, name := range slices.Sorted(maps.Keys(raw.Clusters)) {
		c := raw.Clusters[name]
		ca := c.CertificateAuthorityData
		if len(ca) == 0 && c.CertificateAuthority != "" {
			ca, _ = os.ReadFile(c.CertificateAuthority)
		}
		out = append(out, inspect.Server{URL: c.Server, CAData: ca})
	}
	return out
}

func validOutput(o string) error {
	switch o {
	case "table", "json", "yaml":
		return nil
	}
	return fmt.Errorf("unknown output format %q: use table, json or yaml", o)
}

// printStructured writes v as JSON or YAML; it reports false for table.
func printStructured(out io.Writer, format string, v any) (bool, error) {
	switch format {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintln(out, string(b))
		return true, err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = out.Write(b)
		return true, err
	}
	return false, nil
}
