package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// upEnv is what every step of Up shares.
type upEnv struct {
	opts     Options
	p        *progress
	ports    *portAllocator
	ca       *keyPair
	caFile   string
	caKey    string
	stages   []byte
	dnsBlock []string
	// motoPort is moto's port on 127.0.0.1 (RegistryCloudMap), chosen
	// before anything starts so that real nodes can forward it.
	motoPort int
}

// Up starts a sandbox as Options say and returns once every cluster serves
// its API, has a Ready node, answers DNS, and (when started) every
// clusterset-controller is healthy. On failure it stops what it started,
// unless Options.KeepOnFailure; logs stay in Dir/logs either way.
func Up(ctx context.Context, opts Options) (*Sandbox, error) {
	start := time.Now()
	if err := opts.complete(); err != nil {
		return nil, err
	}
	p := &progress{out: opts.Out, start: start}
	if err := prepareDir(ctx, opts, p); err != nil {
		return nil, err
	}
	s := &Sandbox{
		Dir:          opts.Dir,
		Kubeconfig:   filepath.Join(opts.Dir, "kubeconfig"),
		ClusterSetID: opts.ClusterSetID,
		Registry:     opts.Registry,
		BinDir:       opts.BinDir,
		RepoDir:      opts.RepoDir,
		Created:      start,
		Nodes:        opts.Nodes,
	}
	if opts.Registry == RegistryHub {
		s.HubCluster = clusterName(1)
	}
	err := s.up(ctx, opts, p)
	if err != nil {
		if opts.KeepOnFailure {
			p.say("failed; processes left running for inspection (stop them with `kubectl clusterset sandbox down --dir %s`); logs in %s", opts.Dir, filepath.Join(opts.Dir, "logs"))
		} else {
			p.say("failed; stopping what was started; logs kept in %s", filepath.Join(opts.Dir, "logs"))
			_ = s.Down(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	return s, nil
}

func clusterName(i int) string { return fmt.Sprintf("cls%d", i) }

// complete fills in defaults and checks that everything Up needs is there.
func (o *Options) complete() error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Clusters == 0 {
		o.Clusters = 2
	}
	if o.Clusters < 1 || o.Clusters > MaxClusters {
		return fmt.Errorf("clusters must be between 1 and %d, got %d", MaxClusters, o.Clusters)
	}
	if o.Registry == "" {
		o.Registry = RegistryHub
	}
	if o.Registry != RegistryHub && o.Registry != RegistryCloudMap {
		return fmt.Errorf("registry must be %q or %q, got %q", RegistryHub, RegistryCloudMap, o.Registry)
	}
	switch o.Install {
	case "":
		o.Install = InstallKustomize
	case InstallKustomize, InstallHelm:
	default:
		return fmt.Errorf("install must be %q or %q, got %q", InstallKustomize, InstallHelm, o.Install)
	}
	if o.ClusterSetID == "" {
		o.ClusterSetID = DefaultClusterSetID
	}
	if o.Dir == "" {
		o.Dir = DefaultDir()
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = dir
	if o.RepoDir == "" {
		if o.RepoDir, err = FindRepoDir(); err != nil {
			return err
		}
	}
	if o.BinDir == "" {
		o.BinDir = os.Getenv("CLUSTERSET_SANDBOX_BIN")
	}
	if o.BinDir == "" {
		o.BinDir = filepath.Join(o.RepoDir, ".cache", "sandbox")
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return err
	}
	if missing := MissingBinaries(o.BinDir); len(missing) > 0 {
		return fmt.Errorf("%w: %s not in %s: run `hack/build-binaries.sh sandbox` (a cold build takes 15-25 minutes on 2 cores)",
			ErrBinariesMissing, strings.Join(missing, ", "), o.BinDir)
	}
	if o.NodeBinDir == "" {
		o.NodeBinDir = filepath.Join(o.RepoDir, ".cache", "node")
	}
	if o.ImagesDir == "" {
		o.ImagesDir = filepath.Join(o.RepoDir, ".cache", "images")
	}
	problem := RealNodesProblem(o.NodeBinDir)
	switch o.Nodes {
	case "":
		o.Nodes, o.nodesWhy = NodesReal, "real nodes can run here"
		if problem != "" {
			o.Nodes, o.nodesWhy = NodesKwok, problem
		}
	case NodesReal:
		if problem != "" {
			return fmt.Errorf("--nodes real: %s", problem)
		}
		o.nodesWhy = "as asked"
	case NodesKwok:
		o.nodesWhy = "as asked"
	default:
		return fmt.Errorf("nodes must be %q or %q, got %q", NodesKwok, NodesReal, o.Nodes)
	}
	if o.Registry == RegistryCloudMap && o.MotoServer == "" {
		if o.MotoServer, err = exec.LookPath("moto_server"); err != nil {
			return fmt.Errorf("--registry cloudmap needs moto_server (pip install 'moto[server]'): %w", err)
		}
	}
	return nil
}

// MissingBinaries lists the component binaries not found in binDir.
func MissingBinaries(binDir string) []string {
	var missing []string
	for _, name := range requiredBinaries {
		if st, err := os.Stat(filepath.Join(binDir, name)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}

// prepareDir makes Dir ready for a new sandbox: a running one is an error
// (unless Recreate); leftovers of a crashed or partial one are stopped and
// removed, so that stale pids, ports and files never get in the way.
func prepareDir(ctx context.Context, opts Options, p *progress) error {
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return err
	}
	if old, err := Load(opts.Dir); err == nil {
		old.Dir = opts.Dir
		running, _ := old.Running()
		if old.Ready && len(running) == len(old.Processes) && !opts.Recreate {
			return fmt.Errorf("%w: %s (run `kubectl clusterset sandbox down` first, or up --recreate)", ErrRunning, opts.Dir)
		}
		if len(running) > 0 {
			p.say("stopping %d process(es) left by a previous sandbox in %s", len(running), opts.Dir)
		}
		errs := old.stopAll(ctx)
		if old.Network != nil {
			errs = append(errs, old.Network.teardown(ctx)...)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		p.say("ignoring unreadable previous state: %v", err)
	}
	if err := cleanDir(opts.Dir); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(opts.Dir, "logs"))
}

func (s *Sandbox) up(ctx context.Context, opts Options, p *progress) error {
	env := &upEnv{opts: opts, p: p, ports: newPortAllocator()}
	p.say("sandbox in %s: %d cluster(s), registry %s, binaries from %s", opts.Dir, opts.Clusters, opts.Registry, opts.BinDir)
	p.say("nodes: %s (%s)", opts.Nodes, opts.nodesWhy)

	// Build (or find) the controller while the control planes start: a warm
	// go build takes seconds that would otherwise add to the wait.
	type built struct {
		path string
		err  error
	}
	controllerCh := make(chan built, 1)
	buildCtx, cancelBuild := context.WithCancel(ctx)
	defer cancelBuild()
	go func() {
		path, err := s.controllerBinary(buildCtx, opts, p)
		controllerCh <- built{path, err}
	}()

	if err := env.preparePKI(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	stagesDir := opts.KwokStagesDir
	if stagesDir == "" {
		var err error
		if stagesDir, err = kwokStagesDir(ctx, repoVersion(opts.RepoDir, "KWOK_VERSION", defaultKwokVersion)); err != nil {
			return err
		}
	}
	var err error
	if env.stages, err = kwokStages(stagesDir); err != nil {
		return err
	}
	if env.dnsBlock, err = shippedKubernetesBlock(opts.RepoDir); err != nil {
		return err
	}

	for i := 1; i <= opts.Clusters; i++ {
		c, err := env.newCluster(i, opts.Dir)
		if err != nil {
			return err
		}
		s.Clusters = append(s.Clusters, c)
	}
	if err := s.writeAdminKubeconfig(env); err != nil {
		return err
	}
	if opts.Registry == RegistryCloudMap {
		if env.motoPort, err = env.ports.next(); err != nil {
			return err
		}
	}
	if err := s.save(); err != nil {
		return err
	}
	if s.Nodes == NodesReal {
		if err := s.prepareRealNodes(ctx, env); err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	if opts.Registry == RegistryCloudMap {
		g.Go(func() error { return s.startMoto(gctx, env) })
	}
	for _, c := range s.Clusters {
		g.Go(func() error {
			if err := s.startCluster(gctx, env, c); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}

	b := <-controllerCh
	switch {
	case b.err != nil:
		return b.err
	case s.Nodes == NodesReal && !opts.SkipControllers:
		if err := s.installControllers(ctx, env); err != nil {
			return err
		}
		s.Controllers, s.ControllersInCluster, s.Install = true, true, opts.Install
	case b.path == "":
		// controllerBinary has said why.
	default:
		s.ControllerBinary = b.path
		if err := s.startControllers(ctx, env); err != nil {
			return err
		}
		s.Controllers = true
	}

	s.Ready = true
	if err := s.save(); err != nil {
		return err
	}
	p.say("sandbox ready in %.1fs: export KUBECONFIG=%s", time.Since(p.start).Seconds(), s.Kubeconfig)
	return nil
}

// newCluster assigns a cluster its name, CIDRs and ports.
//
// CIDRs are data only and never routed: cluster I has pods in
// 10.(10+I).0.0/16 and ClusterIPs in 10.(100+I).0.0/16.
func (env *upEnv) newCluster(i int, dir string) (*Cluster, error) {
	name := clusterName(i)
	c := &Cluster{
		Name:        name,
		Index:       i,
		Dir:         filepath.Join(dir, "clusters", name),
		PodCIDR:     fmt.Sprintf("10.%d.0.0/16", 10+i),
		ServiceCIDR: fmt.Sprintf("10.%d.0.0/16", 100+i),
		NodeName:    "kwok-" + name,
	}
	if env.opts.Nodes == NodesReal {
		c.NodeName = "node-" + name
	}
	for _, port := range []*int{
		&c.Ports.Etcd, &c.Ports.EtcdPeer, &c.Ports.APIServer, &c.Ports.ControllerManager, &c.Ports.Scheduler,
		&c.Ports.DNS, &c.Ports.DNSReady, &c.Ports.ControllerMetrics, &c.Ports.ControllerHealth,
	} {
		var err error
		if *port, err = env.ports.next(); err != nil {
			return nil, err
		}
	}
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", c.Ports.APIServer)
	c.DNS = fmt.Sprintf("127.0.0.1:%d", c.Ports.DNS)
	if env.opts.Nodes == NodesReal {
		c.NodeServer = fmt.Sprintf("https://%s:%d", realNodeAddress(i), c.Ports.APIServer)
	}
	return c, os.MkdirAll(filepath.Join(c.Dir, "pki"), 0o755)
}

func (env *upEnv) preparePKI() error {
	dir := filepath.Join(env.opts.Dir, "pki")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, err := newCA("clusterset-sandbox-ca")
	if err != nil {
		return err
	}
	env.ca = ca
	env.caFile, env.caKey, err = ca.write(dir, "ca")
	return err
}

// writeAdminKubeconfig writes DIR/kubeconfig: one context per cluster, all
// with a client certificate in system:masters (the clusters share the CA).
func (s *Sandbox) writeAdminKubeconfig(env *upEnv) error {
	admin, err := env.ca.issue("clusterset-sandbox-admin", []string{"system:masters"}, nil, false)
	if err != nil {
		return err
	}
	if _, _, err := admin.write(filepath.Join(env.opts.Dir, "pki"), "admin"); err != nil {
		return err
	}
	var entries []kubeconfigEntry
	for _, c := range s.Clusters {
		entries = append(entries, kubeconfigEntry{
			name: c.Name, server: c.Server, caPEM: env.ca.certPEM,
			creds: credentials{certPEM: admin.certPEM, keyPEM: admin.keyPEM},
			user:  c.Name + "-admin",
		})
	}
	return writeKubeconfig(s.Kubeconfig, entries...)
}

// controllerBinary returns the clusterset-controller to run: the one given,
// or one built from the repository; "" (with a warning) when there is none
// yet or controllers are skipped.
func (s *Sandbox) controllerBinary(ctx context.Context, opts Options, p *progress) (string, error) {
	if opts.SkipControllers {
		p.say("clusterset-controller: skipped (as asked)")
		return "", nil
	}
	if s.Nodes == NodesReal {
		// The controller runs in pods, from the image prepareRealNodes built.
		if opts.ControllerBinary != "" {
			p.say("clusterset-controller: real nodes run it from image %s; --controller-binary is not used", ImageController)
		}
		return "", nil
	}
	if opts.ControllerBinary != "" {
		path, err := filepath.Abs(opts.ControllerBinary)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("controller binary: %w", err)
		}
		return path, nil
	}
	pkg := filepath.Join(opts.RepoDir, "cmd", "clusterset-controller")
	if _, err := os.Stat(pkg); err != nil {
		p.say("WARNING: %s does not exist yet: starting no clusterset-controller", pkg)
		return "", nil
	}
	return goBuild(ctx, opts, p, "clusterset-controller")
}

// goBuild runs `go build -o Dir/bin/NAME ./cmd/NAME` in the repository and
// returns the binary's path.
func goBuild(ctx context.Context, opts Options, p *progress, name string) (string, error) {
	out := filepath.Join(opts.Dir, "bin", name)
	t0 := time.Now()
	p.say("%s: go build -o %s ./cmd/%s", name, out, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = opts.RepoDir
	if data, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", name, err, data)
	}
	p.say("%s: built in %.1fs", name, time.Since(t0).Seconds())
	return out, nil
}
