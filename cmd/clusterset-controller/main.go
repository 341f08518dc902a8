// Command clusterset-controller runs clusterset's controllers for one member
// cluster. It only parses flags and wires things: the behaviour lives in
// pkg/controllers and the registry backends in pkg/registry.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/clusterset/clusterset/internal/scheme"
	"github.com/clusterset/clusterset/pkg/controllers"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/namespaces"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	"github.com/clusterset/clusterset/pkg/registry/registrymetrics"
)

type flags struct {
	kubeconfig, context     string
	clusterID, clusterSetID string
	registry                string
	hub                     hub.Flags
	cloudMap                cloudmap.Flags
	heartbeatInterval       time.Duration
	gracePeriod             time.Duration
	metricsAddr, probeAddr  string
	pprofAddr               string // --pprof-bind-address
	leaderElect             bool
	leaderElectionNamespace string
	excludedNamespaces      string
	workers                 int
}

// newFlagSet defines every flag of the command, filling f and zapOpts when
// parsed. docs/configuration.md is generated from it (see
// TestConfigurationDocs).
func newFlagSet(name string, f *flags, zapOpts *zap.Options) *flag.FlagSet {
	// A FlagSet of our own: controller-runtime registers --kubeconfig on
	// flag.CommandLine, and this command's --kubeconfig goes with --context.
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the member cluster; in-cluster config when empty")
	fs.StringVar(&f.context, "context", "", "context of --kubeconfig to use; its current context when empty")
	fs.StringVar(&f.clusterID, "cluster-id", "", "creates ClusterProperty cluster.clusterset.k8s.io with this value when it is absent")
	fs.StringVar(&f.clusterSetID, "clusterset-id", "", "creates ClusterProperty clusterset.k8s.io with this value when it is absent")
	fs.StringVar(&f.registry, "registry", "hub", "registry backend: hub (a Kubernetes API server) or cloudmap (AWS Cloud Map)")
	f.hub.AddFlags(fs)
	f.cloudMap.AddFlags(fs)
	fs.DurationVar(&f.heartbeatInterval, "heartbeat-interval", registrylink.DefaultHeartbeatInterval, "how often this cluster renews its liveness record")
	fs.IntVar(&f.workers, "workers", controllers.DefaultWorkers, "how many services the export and the import controller each reconcile at once")
	fs.DurationVar(&f.gracePeriod, "liveness-grace-period", registrylink.DefaultGracePeriod, "endpoints of a cluster whose heartbeat is older than this are withdrawn from imports; 0 disables")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	fs.StringVar(&f.pprofAddr, "pprof-bind-address", "0", "address of Go's /debug/pprof endpoints (CPU and heap profiles of the controller), for example 127.0.0.1:6060; 0 disables them. Unauthenticated: bind it to localhost and reach it with kubectl port-forward")
	fs.StringVar(&f.excludedNamespaces, "excluded-namespaces", strings.Join(namespaces.DefaultExcluded, ","), "comma-separated namespaces that are neither exported from (their ServiceExports get Valid=False NamespaceExcluded) nor imported into; empty excludes none")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader so that only one replica writes")
	fs.StringVar(&f.leaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease; the pod's namespace when empty")
	zapOpts.BindFlags(fs)
	return fs
}

func main() {
	var f flags
	zapOpts := zap.Options{Development: false}
	fs := newFlagSet(os.Args[0], &f, &zapOpts)
	_ = fs.Parse(os.Args[1:])

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		log.Error(err, "clusterset-controller stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	if err := f.validateLiveness(); err != nil {
		return err
	}
	if err := f.validateIdentity(); err != nil {
		return err
	}
	excluded, err := namespaces.NewExclusions(strings.Split(f.excludedNamespaces, ","))
	if err != nil {
		return fmt.Errorf("--excluded-namespaces: %w", err)
	}
	cfg, err := loadConfig(f.kubeconfig, f.context)
	if err != nil {
		return fmt.Errorf("member cluster config: %w", err)
	}
	backend, err := registryFactory(f)
	if err != nil {
		return err
	}
	factory := func(ctx context.Context, id identity.Identity) (registry.Registry, error) {
		r, err := backend(ctx, id)
		if err != nil {
			return nil, err
		}
		return registrymetrics.Wrap(f.registry, r), nil
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme.Scheme,
		Cache:                   controllers.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		PprofBindAddress:        f.pprofAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        "clusterset-controller",
		LeaderElectionNamespace: f.leaderElectionNamespace,
		// The process exits as soon as the manager stops, so the Lease can
		// be handed over at once: a rolling update or a deleted pod does not
		// leave the cluster without a writer for a whole lease duration.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return err
	}
	link, err := controllers.Register(ctx, mgr, controllers.Options{
		Defaults: identity.Identity{ClusterID: f.clusterID, ClusterSetID: f.clusterSetID},
		Registry: factory,
		Link:     f.linkOptions(),
		Excluded: excluded,
		Workers:  f.workers,
	})
	if err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("registry", link.ReadyCheck); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// registryFactory validates the backend flags now, so that a typo fails at
// start, and builds the backend once the cluster's identity is known.
func registryFactory(f flags) (registrylink.Factory, error) {
	// The lease the heartbeat announces to tools (doctor): a renewal is
	// late only after three missed intervals, never sooner than the
	// default.
	lease := max(registry.DefaultLeaseDuration, 3*f.heartbeatInterval)
	switch f.registry {
	case "hub":
		if f.hub.Kubeconfig == "" {
			return nil, fmt.Errorf("--registry hub needs --hub-kubeconfig")
		}
		hubCfg, err := loadConfig(f.hub.Kubeconfig, f.hub.Context)
		if err != nil {
			return nil, fmt.Errorf("hub config: %w", err)
		}
		return func(_ context.Context, id identity.Identity) (registry.Registry, error) {
			return hub.New(hub.Options{ClusterSetID: id.ClusterSetID, ClusterID: id.ClusterID, Config: hubCfg, LeaseDuration: lease, Holder: id.UID})
		}, nil
	case "cloudmap":
		if err := f.cloudMap.Validate(); err != nil {
			return nil, err
		}
		return func(ctx context.Context, id identity.Identity) (registry.Registry, error) {
			awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
			if err != nil {
				return nil, fmt.Errorf("AWS config: %w", err)
			}
			if awsCfg.Region == "" {
				return nil, fmt.Errorf("no AWS region: set AWS_REGION (chart value registry.cloudMap.region, AWS_REGION in config/overlays/cloudmap/cloudmap.env)")
			}
			o := f.cloudMap.Options(id.ClusterSetID, id.ClusterID)
			o.Holder = id.UID
			o.LeaseDuration = lease
			o.Logger = ctrl.Log.WithName("cloudmap")
			return cloudmap.New(awsCfg, o)
		}, nil
	default:
		return nil, fmt.Errorf("--registry must be hub or cloudmap, not %q", f.registry)
	}
}

// loadConfig returns the member cluster's client config. Without a
// client-side rate limit, as controller-runtime's in-cluster config has
// none either: the API server's Priority and Fairness protects it, and
// client-go's default of 5 requests per second made a burst of 200 exports
// take two minutes.
func loadConfig(kubeconfig, context string) (*rest.Config, error) {
	if kubeconfig == "" && context == "" {
		return ctrl.GetConfig()
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err == nil && cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, err
}

// linkOptions maps the liveness flags to registrylink.Options: a flag's 0
// disables the grace period, which Options spells as a negative value (its
// zero is the default).
func (f *flags) linkOptions() registrylink.Options {
	o := registrylink.Options{HeartbeatInterval: f.heartbeatInterval, GracePeriod: f.gracePeriod}
	if o.GracePeriod <= 0 {
		o.GracePeriod = -1
	}
	return o
}

// validateLiveness refuses a grace period that a single missed heartbeat
// would exceed: every member would then look silent between two renewals.
func (f *flags) validateLiveness() error {
	if f.gracePeriod > 0 && f.gracePeriod <= f.heartbeatInterval {
		return fmt.Errorf("--liveness-grace-period=%s must be longer than --heartbeat-interval=%s (three intervals or more is usual), or 0 to turn the check off",
			f.gracePeriod, f.heartbeatInterval)
	}
	return nil
}

// validateIdentity refuses an ID flag that the identity controller would
// write into its ClusterProperty and then reject: the property would have
// to be fixed by hand. Empty flags create nothing and are fine.
func (f *flags) validateIdentity() error {
	if f.clusterID != "" {
		if err := registry.ValidateClusterID(f.clusterID); err != nil {
			return fmt.Errorf("--cluster-id: %w", err)
		}
	}
	if f.clusterSetID != "" {
		if err := registry.ValidateClusterSetID(f.clusterSetID); err != nil {
			return fmt.Errorf("--clusterset-id: %w", err)
		}
	}
	return nil
}
