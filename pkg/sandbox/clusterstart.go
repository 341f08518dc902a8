package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// clusterStart is one cluster coming up: what each phase of startCluster
// leaves for the next ones.
type clusterStart struct {
	s    *Sandbox
	env  *upEnv
	c    *Cluster
	real bool // real nodes (NodesReal), else kwok
	step func(format string, args ...any)

	// Written by writeCredentials.
	pki                           string
	servingCert, servingKey       string
	frontProxyCert, frontProxyKey string
	saPub, saKey                  string
	kcmKubeconfig                 string
	schedKubeconfig               string
	kwokKubeconfig                string

	cl *clients // from startAPIServer on

	etcd, apiserver, kcm, sched, kwok, coredns *Process
}

// startCluster brings one cluster up, one phase after the other:
// credentials, etcd, kube-apiserver, then the controller manager, scheduler
// and kwok together with the bootstrap objects, then CoreDNS, and finally
// waits for everything started after the API server (and starts the real
// node) in parallel.
func (s *Sandbox) startCluster(ctx context.Context, env *upEnv, c *Cluster) error {
	t0 := time.Now()
	st := &clusterStart{s: s, env: env, c: c, real: s.Nodes == NodesReal, pki: filepath.Join(c.Dir, "pki"),
		step: func(format string, args ...any) {
			env.p.say("%-5s %s (+%.1fs)", c.Name, fmt.Sprintf(format, args...), time.Since(t0).Seconds())
		}}
	for _, phase := range []func(context.Context) error{
		st.writeCredentials,
		st.startEtcd,
		st.startAPIServer,
		st.startControlPlane,
		st.createObjects,
		st.startCoreDNS,
		st.waitReady,
		st.warmKwokIPPool,
	} {
		if err := phase(ctx); err != nil {
			return err
		}
	}
	for _, proc := range []*Process{st.etcd, st.apiserver, st.kcm, st.sched, st.kwok, st.coredns} {
		if proc != nil {
			proc.refreshArgs()
		}
	}
	return s.save()
}

// writeCredentials issues the API server's serving certificate, the front
// proxy and service account keys, and the components' kubeconfigs.
func (st *clusterStart) writeCredentials(context.Context) error {
	env, c := st.env, st.c
	sans := []string{
		"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", firstIP(c.ServiceCIDR),
	}
	if st.real {
		sans = append(sans, realNodeAddress(c.Index))
	}
	serving, err := env.ca.issue("kube-apiserver", nil, sans, true)
	if err != nil {
		return err
	}
	if st.servingCert, st.servingKey, err = serving.write(st.pki, "apiserver"); err != nil {
		return err
	}
	// The front proxy identity lets the API server publish a request-header
	// CA, which the controller manager and scheduler otherwise complain
	// about in a loop.
	frontProxy, err := env.ca.issue("front-proxy-client", nil, nil, false)
	if err != nil {
		return err
	}
	if st.frontProxyCert, st.frontProxyKey, err = frontProxy.write(st.pki, "front-proxy-client"); err != nil {
		return err
	}
	if st.saPub, st.saKey, err = writeServiceAccountKeys(st.pki); err != nil {
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
	st.kcmKubeconfig = filepath.Join(c.Dir, "kube-controller-manager.kubeconfig")
	st.schedKubeconfig = filepath.Join(c.Dir, "kube-scheduler.kubeconfig")
	st.kwokKubeconfig = filepath.Join(c.Dir, "kwok.kubeconfig")
	for _, kc := range []struct {
		file, cn string
		orgs     []string
	}{
		{st.kcmKubeconfig, "system:kube-controller-manager", nil},
		{st.schedKubeconfig, "system:kube-scheduler", nil},
		// kwok plays the kubelet of a node and more (it deletes pods, writes
		// any status its stages say): it gets admin rights.
		{st.kwokKubeconfig, "kwok", []string{"system:masters"}},
	} {
		if err := componentKubeconfig(kc.file, kc.cn, kc.orgs); err != nil {
			return err
		}
	}
	return nil
}

// startEtcd starts etcd and waits until it is healthy.
func (st *clusterStart) startEtcd(ctx context.Context) error {
	env, c := st.env, st.c
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.Ports.Etcd)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", c.Ports.EtcdPeer)
	var err error
	st.etcd, err = st.s.launch(env, c.Name+"/etcd", nil, env.bin("etcd"),
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
	if err := waitFor(ctx, st.etcd, "etcd", etcdTimeout, func(ctx context.Context) bool {
		return httpOK(ctx, etcdURL+"/health")
	}); err != nil {
		return err
	}
	st.step("etcd ready on %s", etcdURL)
	return nil
}

// startAPIServer starts kube-apiserver, waits until it is ready, and makes
// the clients of the later phases.
func (st *clusterStart) startAPIServer(ctx context.Context) error {
	s, env, c := st.s, st.env, st.c
	apiArgs := []string{env.bin("kube-apiserver"),
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", c.Ports.Etcd),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.Ports.APIServer),
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file=" + st.servingCert,
		"--tls-private-key-file=" + st.servingKey,
		"--client-ca-file=" + env.caFile,
		"--requestheader-client-ca-file=" + env.caFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + st.frontProxyCert,
		"--proxy-client-key-file=" + st.frontProxyKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + st.saPub,
		"--service-account-signing-key-file=" + st.saKey,
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
	if st.real {
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
		kcCert, kcKey, err := kubeletClient.write(st.pki, "apiserver-kubelet-client")
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
	var err error
	if st.apiserver, err = s.launch(env, c.Name+"/kube-apiserver", nil, apiArgs...); err != nil {
		return err
	}
	cfg, err := restConfigFor(s.Kubeconfig, c.Name)
	if err != nil {
		return err
	}
	if st.cl, err = newClients(cfg); err != nil {
		return err
	}
	if err := waitFor(ctx, st.apiserver, "kube-apiserver", apiServerTimeout, func(ctx context.Context) bool {
		body, err := st.cl.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	}); err != nil {
		return err
	}
	st.step("kube-apiserver ready on %s", c.Server)
	return nil
}

// startControlPlane starts the controller manager, the scheduler and, with
// kwok nodes, kwok; waitReady waits for them.
func (st *clusterStart) startControlPlane(context.Context) error {
	s, env, c := st.s, st.env, st.c
	// No node IPAM: nodes get their pod CIDR from the sandbox (kwok's flag,
	// the real node's CNI configuration). No node lifecycle with kwok: kwok
	// owns node conditions, and the controller would taint and evict a node
	// it finds odd; a real node needs it to lose its not-ready taint.
	kcmControllers := "*,-nodeipam,-nodelifecycle"
	if st.real {
		kcmControllers = "*,-nodeipam"
	}
	var err error
	st.kcm, err = s.launch(env, c.Name+"/kube-controller-manager", nil, env.bin("kube-controller-manager"),
		"--kubeconfig="+st.kcmKubeconfig,
		"--authentication-kubeconfig="+st.kcmKubeconfig,
		"--authorization-kubeconfig="+st.kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.Ports.ControllerManager),
		"--cert-dir="+filepath.Join(c.Dir, "kube-controller-manager"),
		"--controllers="+kcmControllers,
		"--allocate-node-cidrs=false",
		"--cluster-cidr="+c.PodCIDR,
		"--service-cluster-ip-range="+c.ServiceCIDR,
		"--cluster-name="+c.Name,
		"--service-account-private-key-file="+st.saKey,
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
	st.sched, err = s.launch(env, c.Name+"/kube-scheduler", nil, env.bin("kube-scheduler"),
		"--kubeconfig="+st.schedKubeconfig,
		"--authentication-kubeconfig="+st.schedKubeconfig,
		"--authorization-kubeconfig="+st.schedKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.Ports.Scheduler),
		"--cert-dir="+filepath.Join(c.Dir, "kube-scheduler"),
		"--leader-elect=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	if st.real {
		return nil
	}
	kwokConfig := filepath.Join(c.Dir, "kwok.yaml")
	if err := os.WriteFile(kwokConfig, env.stages, 0o644); err != nil {
		return err
	}
	kwokHome := filepath.Join(c.Dir, "kwok-home")
	if err := os.MkdirAll(kwokHome, 0o755); err != nil {
		return err
	}
	st.kwok, err = s.launch(env, c.Name+"/kwok", []string{"HOME=" + kwokHome}, env.bin("kwok"),
		"--kubeconfig="+st.kwokKubeconfig,
		"--config="+kwokConfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr="+c.PodCIDR,
		"--node-ip="+nodeIP(c.Index),
	)
	return err
}

// createObjects installs the CRDs and the identity ClusterProperties, and
// with kwok the node.
func (st *clusterStart) createObjects(ctx context.Context) error {
	c := st.c
	if err := st.cl.installCRDs(ctx, filepath.Join(st.env.opts.RepoDir, "config", "crd")); err != nil {
		return err
	}
	if err := st.cl.createClusterProperties(ctx, c.Name, st.s.ClusterSetID); err != nil {
		return err
	}
	st.step("CRDs installed, ClusterProperties %s=%s, %s=%s", "cluster.clusterset.k8s.io", c.Name, "clusterset.k8s.io", st.s.ClusterSetID)
	if st.real {
		return nil
	}
	return st.cl.createNode(ctx, c.NodeName, c.PodCIDR)
}

// startCoreDNS gives the sandbox's CoreDNS its identity and Corefile and
// starts it; waitReady waits for it to answer.
func (st *clusterStart) startCoreDNS(ctx context.Context) error {
	s, env, c := st.s, st.env, st.c
	corednsKubeconfig, err := s.corednsIdentity(ctx, env, st.cl, c)
	if err != nil {
		return err
	}
	corefile := filepath.Join(c.Dir, "Corefile")
	if err := os.WriteFile(corefile, []byte(sandboxCorefile(env.dnsBlock, c.Ports.DNS, c.Ports.DNSReady, corednsKubeconfig, c.Name)), 0o644); err != nil {
		return err
	}
	st.coredns, err = s.launch(env, c.Name+"/coredns", nil, env.bin("coredns"), "-conf", corefile)
	return err
}

// waitReady waits, in parallel, for everything started after the API
// server; with real nodes it starts the node and the in-cluster DNS.
func (st *clusterStart) waitReady(ctx context.Context) error {
	s, env, c, cl, step := st.s, st.env, st.c, st.cl, st.step
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if st.real {
			if err := s.startNode(gctx, env, cl, c, step); err != nil {
				return err
			}
			return s.startInClusterDNS(gctx, env, cl, c, step)
		}
		if err := waitFor(gctx, st.kwok, "kwok node "+c.NodeName+" Ready", componentsTimeout, func(ctx context.Context) bool {
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
		if err := waitFor(gctx, st.kcm, "kube-controller-manager", componentsTimeout, func(ctx context.Context) bool {
			_, err := cl.kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err == nil && httpOK(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.Ports.ControllerManager))
		}); err != nil {
			return err
		}
		step("kube-controller-manager ready")
		return nil
	})
	g.Go(func() error {
		if err := waitFor(gctx, st.sched, "kube-scheduler", componentsTimeout, func(ctx context.Context) bool {
			return httpOK(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.Ports.Scheduler))
		}); err != nil {
			return err
		}
		step("kube-scheduler ready")
		return nil
	})
	g.Go(func() error {
		var ip string
		if err := waitFor(gctx, st.coredns, "CoreDNS", dnsTimeout, func(ctx context.Context) bool {
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
	return g.Wait()
}
