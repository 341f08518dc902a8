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
