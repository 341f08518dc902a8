// Package testcontrollers runs clusterset's controllers in the test process
// the way cmd/clusterset-controller runs them (pkg/controllers.Register on a
// manager), for the integration tests and the benchmarks.
package testcontrollers

import (
	"context"
	"sync"
	"testing"

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
// returns its registry link and a stop function that stops the manager and
// waits for it (safe to call more than once). A manager that fails reports
// through t.Errorf. No metrics or probe listener is opened, and several
// members may run in one process.
func Run(t testing.TB, cfg *rest.Config, name string, opts controllers.Options) (*registrylink.Link, func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several members' managers share the test process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Logger:     ctrl.Log.WithValues("cluster", name),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	link, err := controllers.Register(ctx, mgr, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("%s: manager: %v", name, err)
		}
	}()
	var once sync.Once
	return link, func() { once.Do(func() { cancel(); <-done }) }
}
