// Package controllers assembles clusterset's reconcilers on a manager. cmd/
// and the tests use the same assembly, so tests run what users run.
package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/clusterset/clusterset/pkg/controllers/export"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/imports"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/namespaces"
)

// Options configure the controllers of one member cluster.
type Options struct {
	// Defaults create the identity ClusterProperties when they are absent.
	Defaults identity.Identity
	// Registry builds the registry backend once the identity is known.
	Registry registrylink.Factory
	Link     registrylink.Options
	// Excluded namespaces are neither exported from nor imported into
	// (cmd's --excluded-namespaces; namespaces.DefaultExcluded there). The
	// zero value excludes nothing.
	Excluded namespaces.Exclusions
}

// Register adds the identity, export and import controllers and the registry
// link to mgr, and returns the link.
func Register(ctx context.Context, mgr ctrl.Manager, opts Options) (*registrylink.Link, error) {
	ids := identity.NewStore()
	linkOpts := opts.Link
	linkOpts.Elected = mgr.Elected() // closed at once without leader election
	link := registrylink.New(ids, opts.Registry, linkOpts)
	if err := mgr.Add(link); err != nil {
		return nil, err
	}
	for _, r := range []interface {
		Register(context.Context, ctrl.Manager) error
	}{
		identity.NewController(mgr.GetClient(), mgr.GetEventRecorder("clusterset-identity"), ids, opts.Defaults),
		export.NewController(mgr.GetClient(), mgr.GetEventRecorder("clusterset-export"), link, opts.Excluded),
		imports.NewController(mgr.GetClient(), mgr.GetEventRecorder("clusterset-import"), link, opts.Excluded),
	} {
		if err := r.Register(ctx, mgr); err != nil {
			return nil, err
		}
	}
	return link, nil
}
