// Package controllers assembles clusterset's reconcilers on a manager. cmd/
// and the tests use the same assembly, so tests run what users run.
package controllers

import (
	"context"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

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
	// Workers is how many services the export and the import controller
	// each reconcile at once (controller-runtime's MaxConcurrentReconciles;
	// one service is never reconciled twice at once). Default
	// DefaultWorkers.
	Workers int
	// Clock is the member's clock for the controllers and the link (records'
	// change times, liveness). Default the real clock; tests give a member
	// a wrong one. Link.Clock, when set, wins for the link.
	Clock clock.PassiveClock
}

// CacheOptions are the options of the manager's cache that the controllers
// are written for: objects are cached without their managedFields, which
// nothing here reads and which take a large part of each cached object
// (every Service and EndpointSlice of the cluster is cached). Writes of a
// cached object leave the stored managedFields as they are: the API server
// keeps them when a request carries none.
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
}

// DefaultWorkers is the default of Options.Workers: reconciles wait on the
// API server and the registry far more than on CPU, so a burst of exports
// goes through several at a time.
const DefaultWorkers = 8

// Register adds the identity, export and import controllers and the registry
// link to mgr, and returns the link.
func Register(ctx context.Context, mgr ctrl.Manager, opts Options) (*registrylink.Link, error) {
	ids := identity.NewStore()
	linkOpts := opts.Link
	linkOpts.Elected = mgr.Elected() // closed at once without leader election
	if linkOpts.Clock == nil {
		linkOpts.Clock = opts.Clock
	}
	link := registrylink.New(ids, opts.Registry, linkOpts)
	if err := mgr.Add(link); err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	exp := export.NewController(mgr.GetClient(), mgr.GetEventRecorder("clusterset-export"), link, opts.Excluded)
	exp.Workers = workers
	if opts.Clock != nil {
		exp.Clock = opts.Clock
	}
	imp := imports.NewController(mgr.GetClient(), mgr.GetEventRecorder("clusterset-import"), link, opts.Excluded)
	imp.Workers = workers
	if opts.Clock != nil {
		imp.Clock = opts.Clock
	}
	for _, r := range []interface {
		Register(context.Context, ctrl.Manager) error
	}{
		identity.NewController(mgr.GetClient(), mgr.GetEventRecorder("clusterset-identity"), ids, opts.Defaults),
		exp,
		imp,
	} {
		if err := r.Register(ctx, mgr); err != nil {
			return nil, err
		}
	}
	return link, nil
}
