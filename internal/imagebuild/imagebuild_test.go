package imagebuild

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/clusterset/clusterset/internal/prereq"
	"github.com/clusterset/clusterset/pkg/images"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// repoRoot is the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// needTool skips the test when a tool of the build machine is missing,
// unless CI is set: then the test fails and says how to install it.
func needTool(t *testing.T, path, install string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	prereq.Missing(t, path+" is missing: "+install)
}

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fakeFile writes a small file to stand for a binary or the CA bundle.
func fakeFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// layerFiles lists the paths (directories with a trailing slash, links as
// "path -> target") and modes of the image's only layer.
func layerFiles(t *testing.T, img v1.Image) map[string]int64 {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %v, %v", layers, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]int64{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		key := h.Name
		if h.Typeflag == tar.TypeSymlink {
			key += " -> " + h.Linkname
		}
		out[key] = h.Mode
	}
}

func TestImageSpecs(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	bin, certs := fakeFile(t, "binary"), fakeFile(t, "ca.crt")
	certDirs := map[string]int64{"etc/": 0o755, "etc/ssl/": 0o755, "etc/ssl/certs/": 0o755, "etc/ssl/certs/ca-certificates.crt": 0o644}
	with := func(m map[string]int64, more map[string]int64) map[string]int64 {
		out := map[string]int64{}
		for k, v := range m {
			out[k] = v
		}
		for k, v := range more {
			out[k] = v
		}
		return out
	}
	cases := []struct {
		name       string
		spec       images.Spec
		entrypoint []string
		cmd        []string
		files      map[string]int64
		version    string
	}{
		{"clusterset-controller", ControllerSpec(bin, certs, "dev"), []string{"/clusterset-controller"}, nil,
			with(certDirs, map[string]int64{"clusterset-controller": 0o755}), "dev"},
		{"coredns", CoreDNSSpec(bin, certs, "v1.15.0"), []string{"/coredns"}, nil,
			with(certDirs, map[string]int64{"coredns": 0o755}), "v1.15.0"},
		{"echo-server", EchoServerSpec(bin, "dev"), []string{"/echo-server"}, nil,
			map[string]int64{"echo-server": 0o755}, "dev"},
		{"pause", PauseSpec(bin, "dev"), []string{"/pause"}, nil,
			map[string]int64{"pause": 0o755}, "dev"},
		{"client", ClientSpec(bin, certs, "v1.35.0", []string{"sh", "nslookup"}), nil, []string{"/bin/sleep", "infinity"},
			with(certDirs, map[string]int64{"bin/": 0o755, "bin/busybox": 0o755, "bin/sh -> busybox": 0o777,
				"bin/nslookup -> busybox": 0o777, "tmp/": 0o1777}), "v1.35.0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := images.Build(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Config.User != "65532:65532" {
				t.Errorf("user %q, want non-root 65532:65532", cf.Config.User)
			}
			if !reflect.DeepEqual(cf.Config.Entrypoint, c.entrypoint) || !reflect.DeepEqual(cf.Config.Cmd, c.cmd) {
				t.Errorf("entrypoint %q cmd %q, want %q %q", cf.Config.Entrypoint, cf.Config.Cmd, c.entrypoint, c.cmd)
			}
			l := cf.Config.Labels
			if l["org.opencontainers.image.title"] != c.name || l["org.opencontainers.image.source"] != SourceURL ||
				l["org.opencontainers.image.version"] != c.version {
				t.Errorf("labels %v", l)
			}
			// Nothing but what the image needs.
			if got := layerFiles(t, img); !reflect.DeepEqual(got, c.files) {
				t.Errorf("files:\n got %v\nwant %v", got, c.files)
			}
		})
	}
}

func TestMissingInputsFailClearly(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	dynamic := dynamicExecutable(t)
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no busybox", Options{Busybox: missing}, "busybox-static"},
		{"dynamic busybox", Options{Busybox: dynamic}, "busybox-static"},
		{"no CA certificates", Options{Busybox: DefaultBusybox, CACertificates: missing}, "ca-certificates package"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.opts.Busybox == DefaultBusybox {
				needTool(t, DefaultBusybox, "apt-get install busybox-static")
			}
			c.opts.Root, c.opts.OutDir = root, filepath.Join(dir, "out")
			_, err := Build(context.Background(), c.opts, []string{"client"})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one naming %q", err, c.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "out", "client.tar")); err == nil {
				t.Error("a failed build wrote client.tar")
			}
		})
	}
	if _, err := Build(context.Background(), Options{Root: root, OutDir: dir}, []string{"nginx"}); err == nil ||
		!strings.Contains(err.Error(), "clusterset-controller") {
		t.Errorf("unknown image: err = %v, want the list of known ones", err)
	}
}

func TestVersionOf(t *testing.T) {
	v, err := versionOf(filepath.Join(repoRoot(t), "hack", "versions.sh"), "COREDNS_VERSION")
	if err != nil || !strings.HasPrefix(v, "v1.") {
		t.Errorf("COREDNS_VERSION = %q, %v", v, err)
	}
	if _, err := versionOf(filepath.Join(repoRoot(t), "hack", "versions.sh"), "NO_SUCH_VERSION"); err == nil {
		t.Error("versionOf found a variable that is not there")
	}
}

func TestImagesListKeepsOtherImages(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "images.txt")
	for _, n := range []string{"pause", "client", "coredns"} {
		os.WriteFile(filepath.Join(dir, n+".tar"), nil, 0o644)
	}
	first := []Result{{Name: "pause", Ref: "r/pause:dev", Digest: "sha256:1"}, {Name: "client", Ref: "r/client:dev", Digest: "sha256:2"}}
	if err := updateList(list, first); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "client.tar")) // gone: its line goes too
	if err := updateList(list, []Result{{Name: "coredns", Ref: "r/coredns:dev", Digest: "sha256:3"}, {Name: "pause", Ref: "r/pause:dev", Digest: "sha256:4"}}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(list)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	want := []string{"coredns r/coredns:dev sha256:3", "pause r/pause:dev sha256:4"}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("images.txt lines %q, want %q (in Names order)", lines, want)
	}
}

// dynamicExecutable returns a dynamically linked program of the machine,
// which stands for Debian's (dynamic) busybox package.
func dynamicExecutable(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/ls", "/usr/bin/env", "/bin/sh", "/usr/bin/containerd"} {
		if err := checkStatic(p, runtime.GOARCH); err != nil && strings.Contains(err.Error(), "dynamically linked") {
			return p
		}
	}
	t.Fatal("found no dynamically linked executable to test with")
	return ""
}
