package walkthrough

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubectl/pkg/util/podutils"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/pkg/sandbox"
)

// ClientPod is the walkthrough's client in the importing cluster: the client
// image (sh, nslookup, nc, wget) waiting for `kubectl exec`.
const ClientPod = "client-hello"

// ClientPodObject is a pod of the client image that sleeps until deleted,
// resolving names through the cluster's CoreDNS like any pod.
func ClientPodObject(namespace string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: ClientPod, Labels: map[string]string{LabelApp: ClientPod}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           sandbox.ImageClient,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"sleep", "86400"},
			}},
		},
	}
}

// RealNodes reports whether the sandbox's pods really run (and traffic
// flows), i.e. whether the traffic checks below can work.
func (e *Env) RealNodes() bool { return e.Sandbox.Nodes == sandbox.NodesReal }

// Exec runs command in the first container of a pod, as `kubectl exec`
// does (through the API server and the node's kubelet), and returns its
// standard output and error. A command that exits non-zero is an error that
// carries both.
func (e *Env) Exec(ctx context.Context, cluster, namespace, pod string, command ...string) (stdout, stderr string, err error) {
	cfg, err := e.Sandbox.RESTConfig(cluster)
	if err != nil {
		return "", "", err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", "", err
	}
	req := kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: command, Stdout: true, Stderr: true}, clientscheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return "", "", err
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool { return true })
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if err != nil {
		return out.String(), errOut.String(), fmt.Errorf("%s: exec %q in %s/%s: %w (stdout %q, stderr %q)",
			cluster, strings.Join(command, " "), namespace, pod, err, out.String(), errOut.String())
	}
	return out.String(), errOut.String(), nil
}

// HTTPGet sends one HTTP/1.0 GET for / to host:port from inside a pod (with
// the client image's nc, which resolves host through the pod's resolver)
// and returns the response body.
func (e *Env) HTTPGet(ctx context.Context, cluster, namespace, pod, host string, port int) (string, error) {
	// busybox nc's -w does not end a connection the peer accepted and
	// never answers (an endpoint whose pod is frozen): timeout does.
	script := fmt.Sprintf(`printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' | timeout 8 nc -w 5 %s %d`, host, host, port)
	out, _, err := e.Exec(ctx, cluster, namespace, pod, "sh", "-c", script)
	if err != nil {
		return "", err
	}
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.") {
		return "", fmt.Errorf("%s: no HTTP response from %s:%d: %q", cluster, host, port, out)
	}
	if status := strings.Fields(head); len(status) < 2 || status[1] != "200" {
		return "", fmt.Errorf("%s: %s:%d answered %q", cluster, host, port, strings.SplitN(head, "\r\n", 2)[0])
	}
	return strings.TrimSpace(body), nil
}

// Nslookup resolves name from inside a pod through the cluster's CoreDNS
// (the pod's /etc/resolv.conf) and returns the addresses of the answer.
// A name that does not exist gives an error containing "NXDOMAIN".
func (e *Env) Nslookup(ctx context.Context, cluster, namespace, pod, name string) ([]string, error) {
	out, errOut, err := e.Exec(ctx, cluster, namespace, pod, "nslookup", name)
	if err != nil {
		if strings.Contains(out+errOut, "NXDOMAIN") {
			return nil, fmt.Errorf("%s: %s: NXDOMAIN", cluster, name)
		}
		return nil, err
	}
	// busybox prints the server first ("Server:", "Address: ip:53"), then
	// "Name:" and one "Address: ip" per answer.
	var addrs []string
	answer := false
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "Name:") {
			answer = true
			continue
		}
		if answer && strings.HasPrefix(line, "Address:") {
			addrs = append(addrs, strings.TrimSpace(strings.TrimPrefix(line, "Address:")))
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s: nslookup %s: no address in %q", cluster, name, out)
	}
	return addrs, nil
}

// WaitPodReady waits until a pod is Ready.
func (e *Env) WaitPodReady(ctx context.Context, cluster, namespace, name string, timeout time.Duration) error {
	return Wait(ctx, cluster+" pod "+name+" Ready", timeout, 250*time.Millisecond, nil, func(ctx context.Context) (bool, string, error) {
		var pod corev1.Pod
		if err := e.Client(cluster).Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
			return false, "", err
		}
		if podutils.IsPodReady(&pod) {
			return true, "ready", nil
		}
		return false, fmt.Sprintf("pod %s is %s, not Ready", name, pod.Status.Phase), nil
	})
}
