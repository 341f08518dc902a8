// Package sandbox runs several real, local Kubernetes control planes on one
// machine, without containers: per cluster an etcd, a kube-apiserver, a
// kube-controller-manager, a kube-scheduler, kwok for a fake node whose pods
// become Running with IPs from the cluster's pod CIDR, a CoreDNS with the
// multicluster plugin, and (when built) a clusterset-controller. Everything
// listens on 127.0.0.1 only. Pod and service IPs are data: nothing routes
// them and nothing must send traffic to them.
//
// The `kubectl clusterset sandbox` commands, `make demo`, the e2e suite and
// the benchmarks all use it through Up, Load and Down.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Registry backends the sandbox can wire the controllers to.
const (
	RegistryHub      = "hub"
	RegistryCloudMap = "cloudmap"

	// Ways to install the controllers on real nodes (Options.Install).
	InstallKustomize = "kustomize"
	InstallHelm      = "helm"
)

// DefaultClusterSetID is the clusterset every sandbox cluster joins.
const DefaultClusterSetID = "clusterset1"

// MaxClusters bounds --clusters; the CIDR scheme below has room for it.
const MaxClusters = 50

// Binaries the sandbox runs from Options.BinDir.
var requiredBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "coredns"}

// ErrRunning is returned by Up when Dir already holds a complete, running
// sandbox and Options.Recreate is not set.
var ErrRunning = errors.New("a sandbox is already running in this directory")

// ErrBinariesMissing is returned (wrapped) by Up when a component binary is
// not in Options.BinDir.
var ErrBinariesMissing = errors.New("sandbox binaries are missing")

// Options configure Up. The zero value is usable: two clusters, the hub
// registry, the directory from DefaultDir and binaries from the repository's
// cache.
type Options struct {
	// Dir holds everything the sandbox writes: state.json, kubeconfig,
	// certificates, etcd data and logs/. Default: DefaultDir().
	Dir string
	// Clusters is the number of clusters, named cls1…clsN. Default 2.
	Clusters int
	// Registry is RegistryHub (cls1's API server is the hub) or
	// RegistryCloudMap (a local moto server). Default RegistryHub.
	Registry string
	// ClusterSetID is the value of every cluster's clusterset.k8s.io
	// ClusterProperty. Default DefaultClusterSetID.
	ClusterSetID string
	// RepoDir is the clusterset repository, where config/ and (for building
	// the controller) cmd/ are read. Default: found from the working
	// directory upwards, then from this source file's location.
	RepoDir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kwok and coredns. Default: $CLUSTERSET_SANDBOX_BIN or
	// RepoDir/.cache/sandbox (filled by hack/build-binaries.sh sandbox).
	BinDir string
	// ControllerBinary is the clusterset-controller to run in every cluster.
	// Empty: build RepoDir/cmd/clusterset-controller into Dir/bin when that
	// package exists, else skip the controllers with a warning.
	ControllerBinary string
	// SkipControllers starts no clusterset-controller at all.
	SkipControllers bool
	// ControllerArgs are appended to every controller's command line.
	ControllerArgs []string
	// Install is how real nodes get the controller: InstallKustomize
	// (config/overlays/REGISTRY) or InstallHelm (charts/clusterset through
	// the Helm SDK). Default InstallKustomize.
	Install string
	// KwokStagesDir is kwok's kustomize/stage directory. Default: from the
	// sigs.k8s.io/kwok module of the pinned version (go mod download).
	KwokStagesDir string
	// MotoServer is the moto_server program for RegistryCloudMap. Default:
	// moto_server from PATH.
	MotoServer string
	// Recreate tears down a sandbox that is running in Dir instead of
	// returning ErrRunning.
	Recreate bool
	// Nodes is NodesKwok or NodesReal; empty chooses real nodes where they
	// can run (Linux, root, the node tools and binaries present) and says why
	// it chose kwok otherwise.
	Nodes string
	// NodeBinDir holds kubelet, kube-proxy and cni-plugins/. Default:
	// RepoDir/.cache/node (filled by hack/build-binaries.sh node).
	NodeBinDir string
	// ImagesDir holds the image tarballs real nodes import at start.
	// Default: RepoDir/.cache/images (filled by `make images`, and by Up when
	// it is empty).
	ImagesDir string
	// nodesWhy says why Nodes was chosen.
	nodesWhy string
	// KeepOnFailure leaves the processes of a failed Up running for
	// inspection instead of stopping them.
	KeepOnFailure bool
	// Out receives progress lines. Default: io.Discard.
	Out io.Writer
}

// Sandbox is a started sandbox, as recorded in Dir/state.json.
type Sandbox struct {
	// Dir is the sandbox's directory.
	Dir string `json:"dir"`
	// Kubeconfig has one admin context per cluster, named like the cluster.
	Kubeconfig string `json:"kubeconfig"`
	// ClusterSetID is the clusterset all clusters belong to.
	ClusterSetID string `json:"clusterSetID"`
	// Registry is the registry backend the controllers use.
	Registry string `json:"registry"`
	// HubCluster is the cluster whose API server is the hub registry.
	HubCluster string `json:"hubCluster,omitempty"`
	// MotoEndpoint is the local Cloud Map endpoint (RegistryCloudMap).
	MotoEndpoint string `json:"motoEndpoint,omitempty"`
	// BinDir holds the component binaries the sandbox runs.
	BinDir string `json:"binDir"`
	// RepoDir is the repository whose config/ was installed.
	RepoDir string `json:"repoDir"`
	// Controllers tells whether clusterset-controllers were started.
	Controllers bool `json:"controllers"`
	// ControllersInCluster is true when the controllers run as pods
	// installed from config/ (real nodes), false when they are processes.
	ControllersInCluster bool `json:"controllersInCluster,omitempty"`
	// Install is how the in-cluster controllers were installed:
	// InstallKustomize or InstallHelm.
	Install string `json:"install,omitempty"`
	// ControllerBinary is the controller that was started.
	ControllerBinary string `json:"controllerBinary,omitempty"`
	// Nodes is NodesKwok or NodesReal.
	Nodes string `json:"nodes"`
	// Network is what real nodes need on the machine (nil with kwok nodes).
	Network *Network `json:"network,omitempty"`
	// Clusters are cls1…clsN in order.
	Clusters []*Cluster `json:"clusters"`
	// Processes are all processes started, in start order.
	Processes []*Process `json:"processes"`
	// Ready is set once Up has completed.
	Ready bool `json:"ready"`
	// Created is when Up started.
	Created time.Time `json:"created"`

	mu     sync.Mutex // guards Processes
	saveMu sync.Mutex // serialises writes of state.json
}

// Cluster is one local cluster of the sandbox.
type Cluster struct {
	// Name is clsI, also the kubeconfig context and the cluster ID.
	Name string `json:"name"`
	// Index is I.
	Index int `json:"index"`
	// Dir holds this cluster's files.
	Dir string `json:"dir"`
	// Server is the kube-apiserver's URL.
	Server string `json:"server"`
	// PodCIDR is the range kwok assigns pod IPs from (data only).
	PodCIDR string `json:"podCIDR"`
	// ServiceCIDR is the range of ClusterIPs (data only).
	ServiceCIDR string `json:"serviceCIDR"`
	// NodeName is the node's name (kwok-clsI or node-clsI).
	NodeName string `json:"nodeName"`
	// NodeServer is the kube-apiserver's URL as nodes and pods reach it (real
	// nodes only): the node's address, forwarded to Server.
	NodeServer string `json:"nodeServer,omitempty"`
	// DNS is CoreDNS's address (UDP and TCP), "127.0.0.1:PORT".
	DNS string `json:"dns"`
	// Ports are every port this cluster's processes listen on.
	Ports Ports `json:"ports"`
}

// Ports of one cluster, all on 127.0.0.1.
type Ports struct {
	Etcd              int `json:"etcd"`
	EtcdPeer          int `json:"etcdPeer"`
	APIServer         int `json:"apiServer"`
	ControllerManager int `json:"controllerManager"`
	Scheduler         int `json:"scheduler"`
	DNS               int `json:"dns"`
	DNSReady          int `json:"dnsReady"`
	ControllerMetrics int `json:"controllerMetrics"`
	ControllerHealth  int `json:"controllerHealth"`
}

// DefaultDir is $CLUSTERSET_SANDBOX_DIR, else clusterset/sandbox under the
// user's cache directory.
func DefaultDir() string {
	if d := os.Getenv("CLUSTERSET_SANDBOX_DIR"); d != "" {
		return d
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "clusterset", "sandbox")
	}
	return filepath.Join(os.TempDir(), "clusterset-sandbox")
}

// FindRepoDir returns the clusterset repository containing the working
// directory, or the one this package was compiled from.
func FindRepoDir() (string, error) {
	isRepo := func(dir string) bool {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		return err == nil && strings.Contains(string(data), "module github.com/clusterset/clusterset\n")
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if isRepo(dir) {
				return dir, nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	if _, file, _, ok := goruntime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..")
		if isRepo(dir) {
			return filepath.Clean(dir), nil
		}
	}
	return "", errors.New("cannot find the clusterset repository (its config/ is needed): run from inside it or set RepoDir (--repo)")
}

// Load reads the sandbox recorded in dir.
func Load(dir string) (*Sandbox, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no sandbox in %s: %w", dir, err)
		}
		return nil, err
	}
	s := &Sandbox{}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, stateFile), err)
	}
	return s, nil
}

const stateFile = "state.json"

// save writes state.json atomically. Up calls it after every process start,
// so that a crash at any point leaves a record of what to stop.
func (s *Sandbox) save() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	data, err := json.MarshalIndent(s, "", "  ")
	s.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.Dir, stateFile))
}

func (s *Sandbox) record(p *Process) error {
	s.mu.Lock()
	s.Processes = append(s.Processes, p)
	s.mu.Unlock()
	return s.save()
}

// Cluster returns the cluster of that name, or nil.
func (s *Sandbox) Cluster(name string) *Cluster {
	for _, c := range s.Clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// ClusterNames returns cls1…clsN.
func (s *Sandbox) ClusterNames() []string {
	names := make([]string, 0, len(s.Clusters))
	for _, c := range s.Clusters {
		names = append(names, c.Name)
	}
	return names
}

// RESTConfig returns an admin client configuration for a cluster.
func (s *Sandbox) RESTConfig(cluster string) (*rest.Config, error) {
	return restConfigFor(s.Kubeconfig, cluster)
}

// Kubernetes returns an admin clientset for a cluster.
func (s *Sandbox) Kubernetes(cluster string) (kubernetes.Interface, error) {
	cfg, err := s.RESTConfig(cluster)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func restConfigFor(kubeconfig, context string) (*rest.Config, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: context},
	).ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.QPS = 50
	cfg.Burst = 100
	return cfg, nil
}

// Running reports which recorded processes still run, and which are gone.
func (s *Sandbox) Running() (running, gone []*Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.Processes {
		if p.running() {
			running = append(running, p)
		} else {
			gone = append(gone, p)
		}
	}
	return running, gone
}

// Down stops every process the sandbox started (only those whose pid still
// runs the recorded command line) and removes what Up wrote, except logs/
// and bin/. It is safe to call on a partly started or crashed sandbox.
func (s *Sandbox) Down(ctx context.Context) error {
	errs := s.stopAll(ctx)
	if s.Network != nil {
		errs = append(errs, s.Network.teardown(ctx)...)
		if err := removeContainerLogLinks(kubeletContainerLogLinks, filepath.Join(s.Dir, "logs", "pods")); err != nil {
			errs = append(errs, err)
		}
	}
	if err := cleanDir(s.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Down stops and removes the sandbox recorded in dir. A directory without a
// sandbox is not an error.
func Down(ctx context.Context, dir string) error {
	s, err := Load(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	s.Dir = dir
	return s.Down(ctx)
}

// stopAll stops the processes in reverse start order, in stages so that
// dependants go before what they depend on and each stage runs in parallel.
func (s *Sandbox) stopAll(ctx context.Context) []error {
	s.mu.Lock()
	procs := append([]*Process(nil), s.Processes...)
	s.mu.Unlock()
	rank := func(p *Process) int {
		switch component(p.Name) {
		case "clusterset-controller", "kubelet", "kube-proxy":
			return 0
		case "coredns", "kwok", "kube-scheduler", "kube-controller-manager", "containerd":
			return 1
		case "kube-apiserver":
			return 2
		case "etcd":
			return 3
		default:
			return 4
		}
	}
	sort.SliceStable(procs, func(i, j int) bool { return rank(procs[i]) < rank(procs[j]) })
	var (
		errs []error
		mu   sync.Mutex
	)
	for i := 0; i < len(procs); {
		j := i
		for j < len(procs) && rank(procs[j]) == rank(procs[i]) {
			j++
		}
		var wg sync.WaitGroup
		for _, p := range procs[i:j] {
			wg.Go(func() {
				grace := 5 * time.Second
				if ctx.Err() != nil {
					grace = 0
				}
				if err := p.stop(grace); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		i = j
	}
	return errs
}

func component(name string) string {
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[i+1:]
	}
	return name
}

// cleanDir removes everything Up writes into a sandbox directory except logs
// and built binaries.
func cleanDir(dir string) error {
	var errs []error
	for _, name := range []string{stateFile, stateFile + ".tmp", "kubeconfig", "pki", "clusters"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// progress prints timestamped lines relative to the start of Up.
type progress struct {
	out   io.Writer
	start time.Time
	mu    sync.Mutex
}

func (p *progress) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "[%5.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// kubeletContainerLogLinks is where every kubelet links its containers' logs
// (a fixed path in the kubelet, whatever its podLogsDir).
const kubeletContainerLogLinks = "/var/log/containers"

// removeContainerLogLinks removes the links in linkDir that point into
// podLogs: the kubelets of a sandbox leave them behind on the machine.
func removeContainerLogLinks(linkDir, podLogs string) error {
	entries, err := os.ReadDir(linkDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		link := filepath.Join(linkDir, e.Name())
		target, err := os.Readlink(link)
		if err != nil || !strings.HasPrefix(target, podLogs+string(filepath.Separator)) {
			continue
		}
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
