package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// importImages imports every image tarball of Options.ImagesDir into the
// containerd at socket, under the names they carry.
func (s *Sandbox) importImages(ctx context.Context, env *upEnv, socket string) (int, error) {
	tars, err := filepath.Glob(filepath.Join(env.opts.ImagesDir, "*.tar"))
	if err != nil {
		return 0, err
	}
	for _, tar := range tars {
		if err := run(ctx, "ctr", "--address", socket, "-n", "k8s.io", "images", "import", tar); err != nil {
			return 0, err
		}
	}
	return len(tars), nil
}

// LoadImage imports an image tarball (docker-save or OCI layout) into the
// real nodes of the named clusters (all when none is named), as
// `kind load image-archive` does. It fails on a kwok sandbox.
func (s *Sandbox) LoadImage(ctx context.Context, tarball string, clusters ...string) error {
	if s.Nodes != NodesReal {
		return fmt.Errorf("the sandbox in %s has kwok nodes: images are only loaded into real nodes (sandbox up --nodes real)", s.Dir)
	}
	if len(clusters) == 0 {
		clusters = s.ClusterNames()
	}
	for _, name := range clusters {
		c := s.Cluster(name)
		if c == nil {
			return fmt.Errorf("no cluster %q in the sandbox (clusters: %s)", name, strings.Join(s.ClusterNames(), ", "))
		}
		if err := run(ctx, "ctr", "--address", s.nodeDirs(c).socket, "-n", "k8s.io", "images", "import", tarball); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// sandboxImages are the image tarballs (without .tar) real nodes need.
var sandboxImages = []string{"pause", "coredns", "echo-server", "client", "clusterset-controller"}

// ensureImages builds the image tarballs into ImagesDir when one is missing
// (`go run ./hack/images`, what `make images` runs). The controller's image
// is always built again when the sandbox installs the controller, so that
// it runs the repository's code as it is now; the build is reproducible, so
// an unchanged tree gives the same image.
func ensureImages(ctx context.Context, env *upEnv) error {
	var missing []string
	for _, name := range sandboxImages {
		_, err := os.Stat(filepath.Join(env.opts.ImagesDir, name+".tar"))
		if err != nil || (name == "clusterset-controller" && !env.opts.SkipControllers) {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	t0 := time.Now()
	env.p.say("images: building %s into %s (make images)", strings.Join(missing, ", "), env.opts.ImagesDir)
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", "./hack/images", "-out", env.opts.ImagesDir}, missing...)...)
	cmd.Dir = env.opts.RepoDir
	if data, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building images: %v\n%s", err, data)
	}
	env.p.say("images: built in %.1fs", time.Since(t0).Seconds())
	return nil
}
