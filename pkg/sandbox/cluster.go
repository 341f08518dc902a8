package sandbox

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Timeouts of the readiness waits. They are generous because the machine may
// be busy compiling; a warm two-cluster sandbox needs a fraction of them.
const (
	etcdTimeout       = 60 * time.Second
	apiServerTimeout  = 120 * time.Second
	componentsTimeout = 120 * time.Second
	dnsTimeout        = 60 * time.Second
	controllerTimeout = 120 * time.Second
)

// bin is the path of a component binary.
func (env *upEnv) bin(name string) string { return filepath.Join(env.opts.BinDir, name) }

// launch starts a process, records it in state.json and logs it.
func (s *Sandbox) launch(env *upEnv, name string, extraEnv []string, args ...string) (*Process, error) {
	logFile := filepath.Join(s.Dir, "logs", fmt.Sprintf("%s.log", flatName(name)))
	proc, err := startProcess(name, logFile, extraEnv, args...)
	if err != nil {
		return nil, err
	}
	if err := s.record(proc); err != nil {
		return nil, err
	}
	return proc, nil
}

func flatName(name string) string {
	b := []byte(name)
	for i := range b {
		if b[i] == '/' {
			b[i] = '-'
		}
	}
	return string(b)
}

// waitFor polls check until it succeeds, the process dies or the timeout
// passes; errors carry the end of the process's log.
func waitFor(ctx context.Context, proc *Process, what string, timeout time.Duration, check func(context.Context) bool) error {
	var died bool
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if check(ctx) {
			return true, nil
		}
		if proc != nil && !proc.running() {
			died = true
			return false, fmt.Errorf("exited")
		}
		return false, nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := fmt.Sprintf("%s: not ready after %s", what, timeout)
	if died {
		msg = fmt.Sprintf("%s: process exited", what)
	}
	if proc != nil {
		msg += fmt.Sprintf("; last lines of %s:\n%s", proc.Log, logTail(proc.Log, 25))
	}
	return fmt.Errorf("%s", msg)
}

var insecureHTTP = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		// Only ever used against 127.0.0.1 health endpoints of components
		// with self-signed serving certificates.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		Proxy:           nil,
	},
}

func httpOK(ctx context.Context, url string) bool {
	return httpStatus(ctx, url) == http.StatusOK
}

// httpStatus is the status code of a GET, 0 when there is no answer.
func httpStatus(ctx context.Context, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := insecureHTTP.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// startCluster brings one cluster up: etcd, kube-apiserver, then the
// controller manager, scheduler and kwok together with the bootstrap
// objects, then CoreDNS.
func (s *Sandbox) startCluster(ctx context.Context, env *upEnv, c *Cluster) error {
	p := env.p
	pki := filepath.Join(c.Dir, "pki")
	t0 := time.Now()
	step := func(format string, args ...any) {
		p.say("%-5s %s (+%.1fs)", c.Name, fmt.Sprintf(format, args...), time.Since(t0).Seconds())
	}

	// Certificates and keys.
	real := s.Nodes == NodesReal
	sans := []string{
		"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", firstIP(c.ServiceCIDR),
	}
	if real {
		sans = append(sans, realNodeAddress(c.Index))
	}
	serving, err := env.ca.issue("kube-apiserver", nil, sans, true)
	if err != nil {
		return err
	}
	servingCert, servingKey, err := serving.write(pki, "apiserver")
	if err != nil {
		return err
	}
	// The front proxy identity lets the API server publish a request-header
	// CA, which the controller manager and scheduler otherwise complain
	// about in a loop.
	frontProxy, err := env.ca.issue("front-proxy-client", nil, nil, false)
	if err != nil {
		return err
	}
	frontProxyCert, frontProxyKey, err := frontProxy.write(pki, "front-proxy-client")
	if err != nil {
		return err
	}
	saPub, saKey, err := writeServiceAccountKeys(pki)
	if err != nil {
		return err
	}
	componentKubeconfig := func(file, cn string, orgs []string) error {
		kp, err := env.ca.issue(cn, orgs, nil, false)
		if err != nil {
			return err
		}
		return writeKubeconfig(file, kubeconfigEntry{name: c.Name, server: c.Server, caPEM: env.ca.certPEM,
			creds: credentials{certPEM: kp.certPEM, keyPEM: kp.keyPEM}})
	}
	kcmKubeconfig := filepath.Join(c.Dir, "kube-controller-manager.kubeconfig")
	schedKubeconfig := filepath.Join(c.Dir, "kube-scheduler.kubeconfig")
	kwokKubeconfig := filepath.Join(c.Dir, "kwok.kubeconfig")
	for _, kc := range []struct {
		file, cn string
		orgs     []string
	}{
		{kcmKubeconfig, "system:kube-controller-manager", nil},
		{schedKubeconfig, "system:kube-scheduler", nil},
		// kwok plays the kubelet of a node and more (it deletes pods, writes
		// any status its stages say): it gets admin rights.
		{kwokKubeconfig, "kwok", []string{"system:masters"}},
	} {
		if err := componentKubeconfig(kc.file, kc.cn, kc.orgs); err != nil {
			return err
		}
	}

	// etcd.
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.Ports.Etcd)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", c.Ports.EtcdPeer)
	etcd, err := s.launch(env, c.Name+"/etcd", nil, env.bin("etcd"),
		"--name="+c.Name,
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster="+c.Name+"="+peerURL,
		"--initial-cluster-state=new",
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, etcd, "etcd", etcdTimeout, func(ctx context.Context) bool {
		return httpOK(ctx, etcdURL+"/health")
	}); err != nil {
		return err
	}
	step("etcd ready on %s", etcdURL)

	// kube-apiserver.
	apiArgs := []string{env.bin("kube-apiserver"),
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.Ports.APIServer),
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file=" + servingCert,
		"--tls-private-key-file=" + servingKey,
		"--client-ca-file=" + env.caFile,
		"--requestheader-client-ca-file=" + env.caFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + frontProxyCert,
		"--proxy-client-key-file=" + frontProxyKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
	if real {
		// Pods reach the API server through the kubernetes Service, whose
		// endpoint is the node's address, forwarded by netproxy; the API
		// server reaches kubelets and pods through netproxy too.
		egress, err := s.writeEgressSelector(c)
		if err != nil {
			return err
		}
		kubeletClient, err := env.ca.issue("kube-apiserver-kubelet-client", []string{"system:masters"}, nil, false)
		if err != nil {
			return err
		}
		kcCert, kcKey, err := kubeletClient.write(pki, "apiserver-kubelet-client")
		if err != nil {
			return err
		}
		apiArgs = append(apiArgs,
			"--advertise-address="+realNodeAddress(c.Index),
			"--egress-selector-config-file="+egress,
			"--kubelet-client-certificate="+kcCert,
			"--kubelet-client-key="+kcKey,
			"--kubelet-preferred-address-types=InternalIP",
		)
	} else {
		apiArgs = append(apiArgs,
			"--advertise-address=127.0.0.1",
			// The kubernetes Service gets no endpoints: 127.0.0.1 may not be
			// an endpoint, and nothing dials the Service on kwok nodes.
			"--endpoint-reconciler-type=none",
		)
	}
	apiserver, err := s.launch(env, c.Name+"/kube-apiserver", nil, apiArgs...)
	if err != nil {
		return err
	}
	cfg, err := restConfigFor(s.Kubeconfig, c.Name)
	if err != nil {
		return err
	}
	cl, err := newClients(cfg)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, apiserver, "kube-apiserver", apiServerTimeout, func(ctx context.Context) bool {
		body, err := cl.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	}); err != nil {
		return err
	}
	step("kube-apiserver ready on %s", c.Server)

	// The rest of the control plane and the node.
	// No node IPAM: nodes get their pod CIDR from the sandbox (kwok's flag,
	// the real node's CNI configuration). No node lifecycle with kwok: kwok
	// owns node conditions, and the controller would taint and evict a node
	// it finds odd; a real node needs it to lose its not-ready taint.
	kcmControllers := "*,-nodeipam,-nodelifecycle"
	if real {
		kcmControllers = "*,-nodeipam"
	}
	kcm, err := s.launch(env, c.Name+"/kube-controller-manager", nil, env.bin("kube-controller-manager"),
		"--kubeconfig="+kcmKubeconfig,
		"--authentication-kubeconfig="+kcmKubeconfig,
		"--authorization-kubeconfig="+kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.Ports.ControllerManager),
		"--cert-dir="+filepath.Join(c.Dir, "kube-controller-manager"),
		"--controllers="+kcmControllers,
		"--allocate-node-cidrs=false",
		"--cluster-cidr="+c.PodCIDR,
		"--service-cluster-ip-range="+c.ServiceCIDR,
		"--cluster-name="+c.Name,
		"--service-account-private-key-file="+saKey,
		"--root-ca-file="+env.caFile,
		"--use-service-account-credentials=true",
		// The default 20 qps makes creating every controller's account
		// and token take seconds.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--cluster-signing-cert-file="+env.caFile,
		"--cluster-signing-key-file="+env.caKey,
		"--leader-elect=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	sched, err := s.launch(env, c.Name+"/kube-scheduler", nil, env.bin("kube-scheduler"),
		"--kubeconfig="+schedKubeconfig,
		"--authentication-kubeconfig="+schedKubeconfig,
		"--authorization-kubeconfig="+schedKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.Ports.Scheduler),
		"--cert-dir="+filepath.Join(c.Dir, "kube-scheduler"),
		"--leader-elect=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	var kwok *Process
	if !real {
		kwokConfig := filepath.Join(c.Dir, "kwok.yaml")
		if err := os.WriteFile(kwokConfig, env.stages, 0o644); err != nil {
			return err
		}
		kwokHome := filepath.Join(c.Dir, "kwok-home")
		if err := os.MkdirAll(kwokHome, 0o755); err != nil {
			return err
		}
		kwok, err = s.launch(env, c.Name+"/kwok", []string{"HOME=" + kwokHome}, env.bin("kwok"),
			"--kubeconfig="+kwokKubeconfig,
			"--config="+kwokConfig,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
			"--cidr="+c.PodCIDR,
			"--node-ip="+nodeIP(c.Index),
		)
		if err != nil {
			return err
		}
	}

	// Objects: CRDs, identity, the node, CoreDNS's identity.
	if err := cl.installCRDs(ctx, filepath.Join(env.opts.RepoDir, "config", "crd")); err != nil {
		return err
	}
	if err := cl.createClusterProperties(ctx, c.Name, s.ClusterSetID); err != nil {
		return err
	}
	step("CRDs installed, ClusterProperties %s=%s, %s=%s", "cluster.clusterset.k8s.io", c.Name, "clusterset.k8s.io", s.ClusterSetID)
	if !real {
		if err := cl.createNode(ctx, c.NodeName, c.PodCIDR); err != nil {
			return err
		}
	}
	corednsKubeconfig, err := s.corednsIdentity(ctx, env, cl, c)
	if err != nil {
		return err
	}

	// CoreDNS.
	corefile := filepath.Join(c.Dir, "Corefile")
	if err := os.WriteFile(corefile, []byte(sandboxCorefile(env.dnsBlock, c.Ports.DNS, c.Ports.DNSReady, corednsKubeconfig, c.Name)), 0o644); err != nil {
		return err
	}
	coredns, err := s.launch(env, c.Name+"/coredns", nil, env.bin("coredns"), "-conf", corefile)
	if err != nil {
		return err
	}

	// Readiness of everything started after the API server, in parallel.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if real {
			if err := s.startNode(gctx, env, cl, c, step); err != nil {
				return err
			}
			return s.startInClusterDNS(gctx, env, cl, c, step)
		}
		if err := waitFor(gctx, kwok, "kwok node "+c.NodeName+" Ready", componentsTimeout, func(ctx context.Context) bool {
			return cl.waitNodeReady(ctx, c.NodeName, time.Second) == nil
		}); err != nil {
			return err
		}
		step("node %s Ready (kwok, pod CIDR %s)", c.NodeName, c.PodCIDR)
		return nil
	})
	g.Go(func() error {
		// The service account controller creating default/default shows that
		// the controller manager works; pods need that account to be admitted.
		if err := waitFor(gctx, kcm, "kube-controller-manager", componentsTimeout, func(ctx context.Context) bool {
			_, err := cl.kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err == nil && httpOK(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.Ports.ControllerManager))
		}); err != nil {
			return err
		}
		step("kube-controller-manager ready")
		return nil
	})
	g.Go(func() error {
		if err := waitFor(gctx, sched, "kube-scheduler", componentsTimeout, func(ctx context.Context) bool {
			return httpOK(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.Ports.Scheduler))
		}); err != nil {
			return err
		}
		step("kube-scheduler ready")
		return nil
	})
	g.Go(func() error {
		var ip string
		if err := waitFor(gctx, coredns, "CoreDNS", dnsTimeout, func(ctx context.Context) bool {
			svc, err := cl.kube.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				return false
			}
			ip = svc.Spec.ClusterIP
			rcode, addrs, err := QueryA(ctx, c.DNS, "kubernetes.default.svc.cluster.local")
			return err == nil && rcode == 0 && len(addrs) == 1 && addrs[0].String() == ip
		}); err != nil {
			return err
		}
		step("CoreDNS answering on %s (kubernetes.default.svc.cluster.local = %s)", c.DNS, ip)
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	for _, proc := range []*Process{etcd, apiserver, kcm, sched, kwok, coredns} {
		if proc != nil {
			proc.refreshArgs()
		}
	}
	return s.save()
}

// corednsIdentity creates CoreDNS's ServiceAccount with exactly the RBAC that
// config/coredns ships, and a kubeconfig with a token for it.
func (s *Sandbox) corednsIdentity(ctx context.Context, env *upEnv, cl *clients, c *Cluster) (string, error) {
	dir := filepath.Join(env.opts.RepoDir, "config", "coredns")
	files, err := manifestFiles(dir)
	if err != nil {
		return "", err
	}
	objs, err := readObjects(files...)
	if err != nil {
		return "", err
	}
	if err := cl.apply(ctx, "kube-system", objs...); err != nil {
		return "", fmt.Errorf("CoreDNS RBAC from %s: %w", dir, err)
	}
	if err := cl.ensureServiceAccount(ctx, "kube-system", "coredns"); err != nil {
		return "", err
	}
	token, err := cl.token(ctx, "kube-system", "coredns")
	if err != nil {
		return "", err
	}
	file := filepath.Join(c.Dir, "coredns.kubeconfig")
	return file, writeKubeconfig(file, kubeconfigEntry{name: c.Name, server: c.Server, caPEM: env.ca.certPEM,
		creds: credentials{token: token}, user: "system:serviceaccount:kube-system:coredns"})
}

// firstIP is the first usable address of a CIDR: the ClusterIP of the
// kubernetes Service.
func firstIP(cidr string) string {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return "127.0.0.1"
	}
	ip = ip.To4()
	ip[3]++
	return ip.String()
}

// nodeIP is the kwok node's address: data only, like pod IPs.
func nodeIP(i int) string { return fmt.Sprintf("172.16.%d.10", i) }
