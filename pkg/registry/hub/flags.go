package hub

import "flag"

// Flags are the clusterset-controller flags of the hub backend (--registry
// hub), documented in docs/configuration.md.
type Flags struct {
	Kubeconfig, Context string
}

// AddFlags registers the flags on fs.
func (f *Flags) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.Kubeconfig, "hub-kubeconfig", "", "kubeconfig with this member's credentials for the hub (--registry hub)")
	fs.StringVar(&f.Context, "hub-context", "", "context of --hub-kubeconfig to use")
}
