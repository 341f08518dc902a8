// Package testcontrollers runs clusterset's controllers in the test process
// the way cmd/clusterset-controller runs them (pkg/controllers.Register on a
// manager), for the integration tests and the benchmarks.
package testcontrollers

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/controllers"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
)

// Run starts the controllers of member cluster name on cfg with opts, and
// returns its registry link and a stop function that stops the manager,
// waits for it and returns its error (safe to call more than once). No
// metrics or probe listener is opened, and several members may run in one
// process. Each of manager changes the manager's options (leader election,
// for one).
func Run(cfg *rest.Config, name string, opts controllers.Options, manager ...func(*ctrl.Options)) (*registrylink.Link, func() error, error) {
	mo := ctrl.Options{
		Scheme:                 testenv.Scheme,
		Cache:                  controllers.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several members' managers share the test process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Logger:     ctrl.Log.WithValues("cluster", name),
	}
	for _, change := range manager {
		change(&mo)
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	link, err := controllers.Register(ctx, mgr, opts)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var (
		once    sync.Once
		stopErr error
	)
	return link, func() error {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				stopErr = fmt.Errorf("%s: manager: %w", name, err)
			}
		})
		return stopErr
	}, nil
}
