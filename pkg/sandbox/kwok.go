package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// defaultKwokVersion is used when hack/versions.sh cannot be read.
const defaultKwokVersion = "v0.8.0"

// kwokStageSets are the stage sets of kwok's kustomize/stage directory that
// the sandbox plays: nodes become Ready at once and keep a heartbeat; pods
// become Running and Ready with IPs from their node's pod CIDR, complete and
// are deleted at once.
var kwokStageSets = []string{"node/fast", "node/heartbeat", "pod/fast"}

// repoVersion reads NAME=VALUE from hack/versions.sh.
func repoVersion(repoDir, name, fallback string) string {
	f, err := os.Open(filepath.Join(repoDir, "hack", "versions.sh"))
	if err != nil {
		return fallback
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), name+"="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return fallback
}

// kwokStagesDir finds kustomize/stage in the sigs.k8s.io/kwok module of the
// given version through the Go module cache (downloading it if needed).
func kwokStagesDir(ctx context.Context, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "sigs.k8s.io/kwok@"+version)
	cmd.Dir = os.TempDir() // outside any module, so no go.mod is consulted or changed
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locating kwok %s stage files (go mod download): %v: %s", version, err, stderr.String())
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("locating kwok %s stage files: unexpected go mod download output: %s", version, out)
	}
	return filepath.Join(mod.Dir, "kustomize", "stage"), nil
}

// kwokStages concatenates the Stage objects of the chosen stage sets, in the
// order their kustomization.yaml lists them.
func kwokStages(stagesDir string) ([]byte, error) {
	var buf bytes.Buffer
	for _, set := range kwokStageSets {
		dir := filepath.Join(stagesDir, filepath.FromSlash(set))
		data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
		if err != nil {
			return nil, fmt.Errorf("kwok stage set %s: %w", set, err)
		}
		var k struct {
			Resources []string `json:"resources"`
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			return nil, fmt.Errorf("kwok stage set %s: %w", set, err)
		}
		for _, r := range k.Resources {
			stage, err := os.ReadFile(filepath.Join(dir, r))
			if err != nil {
				return nil, fmt.Errorf("kwok stage set %s: %w", set, err)
			}
			buf.WriteString("---\n")
			buf.Write(bytes.TrimSpace(stage))
			buf.WriteString("\n")
		}
	}
	return buf.Bytes(), nil
}

// kwokWarmupPod names the pod warmKwokIPPool creates and deletes.
const kwokWarmupPod = "clusterset-sandbox-kwok-warmup"

// warmKwokIPPool has kwok give one pod an IP before any test's pods exist,
// then deletes that pod.
//
// Why: kwok (v0.8.0, pod_controller.go ipPool) creates a node CIDR's IP pool
// on first use with a Load followed by a Store, not LoadOrStore. When its
// parallel stage players give the very first pods of a node their IPs at the
// same moment, each can create its own pool and both hand out the CIDR's
// first address: two pods with one IP. The exporter rightly counts an
// address once, so a test expecting 3 endpoints from 3 pods would then wait
// for ever. That reading of kwok's code fits two CI failures ("2 endpoints
// (2 ready)" from 3 Ready pods) but was not reproduced (20 fresh sandboxes
// gave distinct IPs), so it is a hypothesis; e2e's podsReady also refuses
// pods that share an IP, and a failed e2e test dumps the pods' IPs. One pod
// served alone creates the pool; every later pod shares it.
func (st *clusterStart) warmKwokIPPool(ctx context.Context) error {
	if st.real {
		return nil
	}
	pods := st.cl.kube.CoreV1().Pods(metav1.NamespaceDefault)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: kwokWarmupPod},
		Spec: corev1.PodSpec{
			NodeName:                     st.c.NodeName,
			AutomountServiceAccountToken: ptr.To(false),
			// kwok pulls and runs nothing; the image is never fetched.
			Containers: []corev1.Container{{Name: "warmup", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{FieldManager: fieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kwok IP pool warm-up pod: %w", err)
	}
	var ip string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, componentsTimeout, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, kwokWarmupPod, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ip = p.Status.PodIP
		return ip != "", nil
	})
	if err != nil {
		return fmt.Errorf("kwok gave the warm-up pod %s no IP within %v: %w", kwokWarmupPod, componentsTimeout, err)
	}
	if err := pods.Delete(ctx, kwokWarmupPod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the kwok warm-up pod: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, componentsTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, kwokWarmupPod, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("the kwok warm-up pod %s is not gone within %v: %w", kwokWarmupPod, componentsTimeout, err)
	}
	st.step("kwok IP pool of %s started (warm-up pod got %s)", st.c.PodCIDR, ip)
	return nil
}
