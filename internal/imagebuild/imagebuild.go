// Package imagebuild defines the container images of this repository and
// builds them into tarballs with pkg/images: what `make images` (the command
// hack/images) runs, kept here so that tests can build the same images.
//
// Every image is single-platform, for the architecture of the machine that
// builds it: the Go binaries are built for it, and the CoreDNS binary, the
// busybox binary and the CA certificates are taken from that machine.
// Multi-architecture images of the controller come from the Dockerfile and
// the release workflow instead (docs/images.md).
package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/clusterset/clusterset/pkg/images"
)

// Names are the images Build knows, in the order it builds them when asked
// for all.
var Names = []string{"clusterset-controller", "coredns", "echo-server", "client", "pause"}

// Defaults of Options.
const (
	DefaultRegistry = "clusterset.dev"
	DefaultTag      = "dev"
	// DefaultCACertificates is the bundle that Debian's ca-certificates
	// package generates.
	DefaultCACertificates = "/etc/ssl/certs/ca-certificates.crt"
	// DefaultBusybox is the binary of Debian's busybox-static package.
	DefaultBusybox = "/bin/busybox"
	// SourceURL is the org.opencontainers.image.source label of every image:
	// where the image's definition (this package) lives.
	SourceURL = "https://github.com/clusterset/clusterset"
)

// clientTools are the busybox applets the client image links in /bin, when
// the busybox binary provides them: what a walkthrough runs in a client pod
// (a shell, DNS lookups, HTTP and TCP clients) and the basics around them.
var clientTools = []string{
	"sh", "nslookup", "nc", "wget", "sleep", "cat", "ls", "ip",
	"echo", "env", "grep", "head", "hostname", "id", "ping", "printf",
	"ps", "sed", "tail", "timeout", "tr", "true", "false", "wc",
}

// Options say where Build finds its inputs and puts its outputs. Zero
// fields take the defaults written beside them.
type Options struct {
	// Root is the repository's top directory (with go.mod). Required.
	Root string
	// OutDir receives NAME.tar for each image and images.txt.
	// Default: Root/.cache/images.
	OutDir string
	// Registry is put in front of each image name. Default: clusterset.dev.
	Registry string
	// Tag is each image's tag, and the version label of the images built
	// from this repository. Default: dev.
	Tag string
	// CacheDir holds the cached component binaries of
	// hack/build-binaries.sh. Default: $CLUSTERSET_CACHE, else Root/.cache.
	CacheDir string
	// CACertificates is the CA bundle copied into the images that make TLS
	// connections. Default: DefaultCACertificates.
	CACertificates string
	// Busybox is the static busybox binary of the client image.
	// Default: DefaultBusybox.
	Busybox string
	// Progress receives one line per built image (and the output of any
	// CoreDNS build). Default: discarded.
	Progress io.Writer
}

// Result is one built image.
type Result struct {
	Name    string // e.g. "pause"
	Ref     string // e.g. "clusterset.dev/pause:dev"
	Digest  string // the manifest digest, e.g. "sha256:..."
	Path    string // the tarball
	Size    int64  // the tarball's size in bytes
	Elapsed time.Duration
}

// Build builds the named images (all of Names when names is empty) into
// opts.OutDir, one tarball each, prints a progress line per image, and
// updates OutDir/images.txt. It stops at the first image that fails, with
// an error that says what is missing and how to get it.
func Build(ctx context.Context, opts Options, names []string) ([]Result, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		names = Names
	}
	for _, n := range names {
		if !known(n) {
			return nil, fmt.Errorf("unknown image %q (known: %s)", n, strings.Join(Names, ", "))
		}
	}
	work, err := os.MkdirTemp("", "clusterset-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	b := &builder{opts: opts, work: work, arch: runtime.GOARCH}

	var results []Result
	for _, n := range names {
		start := time.Now()
		spec, err := b.spec(ctx, n)
		if err != nil {
			return results, fmt.Errorf("image %s: %w", n, err)
		}
		img, err := images.Build(spec)
		if err != nil {
			return results, fmt.Errorf("image %s: %w", n, err)
		}
		ref := opts.Registry + "/" + n + ":" + opts.Tag
		path := filepath.Join(opts.OutDir, n+".tar")
		if err := images.WriteTarballFile(path, ref, img); err != nil {
			return results, fmt.Errorf("image %s: %w", n, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return results, err
		}
		info, err := os.Stat(path)
		if err != nil {
			return results, err
		}
		r := Result{Name: n, Ref: ref, Digest: digest.String(), Path: path, Size: info.Size(), Elapsed: time.Since(start)}
		results = append(results, r)
		fmt.Fprintf(opts.Progress, "[images %5.1fs] %-22s %s  %s  %.1f MiB -> %s\n",
			r.Elapsed.Seconds(), r.Name, r.Ref, r.Digest, float64(r.Size)/(1<<20), relTo(opts.Root, r.Path))
	}
	if err := updateList(filepath.Join(opts.OutDir, "images.txt"), results); err != nil {
		return results, err
	}
	return results, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.Root == "" {
		return o, errors.New("imagebuild: Options.Root is required")
	}
	if o.CacheDir == "" {
		o.CacheDir = os.Getenv("CLUSTERSET_CACHE")
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(o.Root, ".cache")
	}
	if o.OutDir == "" {
		o.OutDir = filepath.Join(o.Root, ".cache", "images")
	}
	if o.Registry == "" {
		o.Registry = DefaultRegistry
	}
	if o.Tag == "" {
		o.Tag = DefaultTag
	}
	if o.CACertificates == "" {
		o.CACertificates = DefaultCACertificates
	}
	if o.Busybox == "" {
		o.Busybox = DefaultBusybox
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	// The full reference is checked once here rather than after a build.
	if _, err := images.FullName(o.Registry + "/x:" + o.Tag); err != nil {
		return o, fmt.Errorf("registry %q and tag %q do not make an image reference: %w", o.Registry, o.Tag, err)
	}
	return o, nil
}

func known(name string) bool {
	for _, n := range Names {
		if n == name {
			return true
		}
	}
	return false
}

type builder struct {
	opts Options
	work string // scratch directory for built binaries
	arch string // GOARCH of every image
}

func (b *builder) spec(ctx context.Context, name string) (images.Spec, error) {
	switch name {
	case "clusterset-controller":
		bin, err := b.goBuild(ctx, "./cmd/clusterset-controller")
		if err != nil {
			return images.Spec{}, err
		}
		certs, err := b.caCertificates()
		if err != nil {
			return images.Spec{}, err
		}
		return ControllerSpec(bin, certs, b.opts.Tag), nil
	case "coredns":
		bin, version, err := b.coreDNS(ctx)
		if err != nil {
			return images.Spec{}, err
		}
		certs, err := b.caCertificates()
		if err != nil {
			return images.Spec{}, err
		}
		return CoreDNSSpec(bin, certs, version), nil
	case "echo-server":
		bin, err := b.goBuild(ctx, "./test/images/echo-server")
		if err != nil {
			return images.Spec{}, err
		}
		return EchoServerSpec(bin, b.opts.Tag), nil
	case "client":
		return b.clientSpec(ctx)
	case "pause":
		bin, err := b.goBuild(ctx, "./test/images/pause")
		if err != nil {
			return images.Spec{}, err
		}
		return PauseSpec(bin, b.opts.Tag), nil
	}
	return images.Spec{}, fmt.Errorf("unknown image %q", name)
}

func labels(title, version, description string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       title,
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.description": description,
		"org.opencontainers.image.source":      SourceURL,
	}
}

// ControllerSpec is the clusterset-controller image: the static binary at
// /clusterset-controller (the entrypoint, so that a Deployment passes only
// args) and the CA bundle, run as NonRoot.
func ControllerSpec(binary, caCertificates, version string) images.Spec {
	return images.Spec{
		Files: []images.File{
			{Path: "/clusterset-controller", Source: binary, Mode: 0o755},
			{Path: "/etc/ssl/certs/ca-certificates.crt", Source: caCertificates, Mode: 0o644},
		},
		Config: images.Config{
			Entrypoint:   []string{"/clusterset-controller"},
			User:         images.NonRoot,
			ExposedPorts: []string{"8080/tcp", "8081/tcp"}, // metrics, health probes
			Labels: labels("clusterset-controller", version,
				"clusterset's Multi-Cluster Services controller (sigs.k8s.io/mcs-api), one per member cluster"),
		},
	}
}

// CoreDNSSpec is the coredns image: the binary at /coredns (the
// entrypoint, as in CoreDNS's own image) and the CA bundle, run as NonRoot.
// Listening on port 53 as NonRoot needs the NET_BIND_SERVICE capability in
// the pod (CoreDNS's own Deployment adds it).
func CoreDNSSpec(binary, caCertificates, version string) images.Spec {
	return images.Spec{
		Files: []images.File{
			{Path: "/coredns", Source: binary, Mode: 0o755},
			{Path: "/etc/ssl/certs/ca-certificates.crt", Source: caCertificates, Mode: 0o644},
		},
		Config: images.Config{
			Entrypoint:   []string{"/coredns"},
			User:         images.NonRoot,
			ExposedPorts: []string{"53/tcp", "53/udp", "9153/tcp"}, // DNS, metrics
			Labels: labels("coredns", version,
				"CoreDNS "+version+" (github.com/coredns/coredns, with the multicluster plugin) built from its Go module"),
		},
	}
}

// EchoServerSpec is the echo-server image: test/images/echo-server's static
// binary at /echo-server, run as NonRoot.
func EchoServerSpec(binary, version string) images.Spec {
	return images.Spec{
		Files: []images.File{{Path: "/echo-server", Source: binary, Mode: 0o755}},
		Config: images.Config{
			Entrypoint:   []string{"/echo-server"},
			User:         images.NonRoot,
			ExposedPorts: []string{"8080/tcp"},
			Labels: labels("echo-server", version,
				"answers every HTTP request with its pod name (test/images/echo-server)"),
		},
	}
}

// PauseSpec is the pause image: test/images/pause's static binary at /pause,
// the pod sandbox of a node, run as NonRoot.
func PauseSpec(binary, version string) images.Spec {
	return images.Spec{
		Files: []images.File{{Path: "/pause", Source: binary, Mode: 0o755}},
		Config: images.Config{
			Entrypoint: []string{"/pause"},
			User:       images.NonRoot,
			Labels: labels("pause", version,
				"pod sandbox: waits for SIGTERM and reaps zombies (test/images/pause)"),
		},
	}
}

// ClientSpec is the client image: a static busybox at /bin/busybox with a
// symbolic link in /bin for each of tools, a world-writable /tmp and the CA
// bundle, run as NonRoot and sleeping forever unless given a command (run
// `kubectl exec` into it, or pass a command).
func ClientSpec(busybox, caCertificates, busyboxVersion string, tools []string) images.Spec {
	files := []images.File{
		{Path: "/bin/busybox", Source: busybox, Mode: 0o755},
		{Path: "/etc/ssl/certs/ca-certificates.crt", Source: caCertificates, Mode: 0o644},
		// Shell here-documents and scratch files need somewhere to write.
		{Path: "/tmp", Dir: true, Mode: 0o777 | os.ModeSticky},
	}
	for _, t := range tools {
		files = append(files, images.File{Path: "/bin/" + t, Link: "busybox"})
	}
	return images.Spec{
		Files: files,
		Config: images.Config{
			Cmd:  []string{"/bin/sleep", "infinity"},
			User: images.NonRoot,
			Env:  []string{"PATH=/bin"},
			Labels: labels("client", busyboxVersion,
				"BusyBox "+busyboxVersion+" (Debian busybox-static): sh, nslookup, nc, wget and friends for poking at services"),
		},
	}
}

func (b *builder) clientSpec(ctx context.Context) (images.Spec, error) {
	const hint = "the client image needs Debian's busybox-static package (apt-get install busybox-static)"
	if _, err := os.Stat(b.opts.Busybox); err != nil {
		return images.Spec{}, fmt.Errorf("%s is missing: %s", b.opts.Busybox, hint)
	}
	if err := checkStatic(b.opts.Busybox, b.arch); err != nil {
		return images.Spec{}, fmt.Errorf("%v: %s (the busybox package's binary is dynamically linked)", err, hint)
	}
	certs, err := b.caCertificates()
	if err != nil {
		return images.Spec{}, err
	}
	// Only the applets this build of busybox has get a link: a link to a
	// missing applet would fail with a confusing "applet not found".
	out, err := exec.CommandContext(ctx, b.opts.Busybox, "--list").Output()
	if err != nil {
		return images.Spec{}, fmt.Errorf("%s --list: %w", b.opts.Busybox, err)
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(out)) {
		have[a] = true
	}
	var tools []string
	for _, t := range clientTools {
		if have[t] {
			tools = append(tools, t)
		}
	}
	if !have["sh"] || !have["sleep"] {
		return images.Spec{}, fmt.Errorf("%s has no sh or sleep applet: %s", b.opts.Busybox, hint)
	}
	return ClientSpec(b.opts.Busybox, certs, busyboxVersion(ctx, b.opts.Busybox), tools), nil
}

// busyboxVersion reads "v1.35.0" from the first line busybox prints about
// itself, or "unknown".
func busyboxVersion(ctx context.Context, busybox string) string {
	// busybox exits non-zero when run without an applet, but prints its
	// banner first.
	out, _ := exec.CommandContext(ctx, busybox).CombinedOutput()
	if m := regexp.MustCompile(`BusyBox (v[0-9][^ ]*)`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "unknown"
}

func (b *builder) caCertificates() (string, error) {
	if _, err := os.Stat(b.opts.CACertificates); err != nil {
		return "", fmt.Errorf("CA certificates %s are missing: install Debian's ca-certificates package (apt-get install ca-certificates)", b.opts.CACertificates)
	}
	return b.opts.CACertificates, nil
}

// goBuild builds a command of this module as a static Linux binary for
// b.arch, the way release binaries are built: no cgo, no file system paths
// or VCS stamps (so that the same source gives the same bytes), no symbol
// tables or DWARF.
func (b *builder) goBuild(ctx context.Context, pkg string) (string, error) {
	out := filepath.Join(b.work, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = b.opts.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+b.arch)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, stderr.String())
	}
	if err := checkStatic(out, b.arch); err != nil {
		return "", err
	}
	return out, nil
}

// coreDNS returns the cached CoreDNS binary of hack/versions.sh's
// COREDNS_VERSION, building it with hack/build-binaries.sh when missing.
func (b *builder) coreDNS(ctx context.Context) (path, version string, err error) {
	version, err = versionOf(filepath.Join(b.opts.Root, "hack", "versions.sh"), "COREDNS_VERSION")
	if err != nil {
		return "", "", err
	}
	path = filepath.Join(b.opts.CacheDir, "bin", "coredns@"+version)
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(b.opts.Progress, "[images] %s is missing: hack/build-binaries.sh coredns (a few minutes on 2 cores)\n", relTo(b.opts.Root, path))
		cmd := exec.CommandContext(ctx, filepath.Join(b.opts.Root, "hack", "build-binaries.sh"), "coredns")
		cmd.Dir = b.opts.Root
		cmd.Env = append(os.Environ(), "CLUSTERSET_CACHE="+b.opts.CacheDir)
		cmd.Stdout, cmd.Stderr = b.opts.Progress, b.opts.Progress
		if err := cmd.Run(); err != nil {
			return "", "", fmt.Errorf("hack/build-binaries.sh coredns: %w", err)
		}
	}
	if err := checkStatic(path, b.arch); err != nil {
		return "", "", err
	}
	return path, version, nil
}

// versionOf reads NAME=value from a shell file of assignments such as
// hack/versions.sh.
func versionOf(file, name string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), name+"="); ok {
			return strings.Trim(v, `"'`), nil
		}
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s does not set %s", file, name)
}

// elfMachines maps the GOARCH values images are built for to their ELF
// machine, to catch a binary of another architecture before it is packaged.
var elfMachines = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"arm":     elf.EM_ARM,
	"386":     elf.EM_386,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

// checkStatic fails unless path is an ELF executable for arch with no
// program interpreter: the images have no dynamic loader or libc, so a
// dynamically linked binary would fail to start with a puzzling "no such
// file or directory".
func checkStatic(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if want, ok := elfMachines[arch]; ok && f.Machine != want {
		return fmt.Errorf("%s is built for %s, not %s", path, f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// updateList writes images.txt ("name reference digest" per line, in the
// order of Names) with the images just built, keeping the lines of other
// images whose tarball is still there.
func updateList(path string, built []Result) error {
	type line struct{ ref, digest string }
	lines := map[string]line{}
	if data, err := os.ReadFile(path); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) != 3 || strings.HasPrefix(f[0], "#") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), f[0]+".tar")); err == nil {
				lines[f[0]] = line{f[1], f[2]}
			}
		}
	}
	for _, r := range built {
		lines[r.Name] = line{r.Ref, r.Digest}
	}
	order := map[string]int{}
	for i, n := range Names {
		order[n] = i
	}
	names := make([]string, 0, len(lines))
	for n := range lines {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return order[names[i]] < order[names[j]] })
	var buf bytes.Buffer
	buf.WriteString("# name reference digest (written by hack/images; load NAME.tar with ctr -n k8s.io images import or docker load)\n")
	for _, n := range names {
		fmt.Fprintf(&buf, "%s %s %s\n", n, lines[n].ref, lines[n].digest)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func relTo(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}
