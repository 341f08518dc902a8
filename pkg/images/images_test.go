package images

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testSpec is an image with one of each kind of entry.
func testSpec(t *testing.T) Spec {
	t.Helper()
	src := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(src, []byte("#!binary\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Files: []File{
			{Path: "/usr/bin/app", Source: src, Mode: 0o755},
			{Path: "/etc/app/config.yaml", Data: []byte("a: 1\n"), UID: 65532, GID: 65532},
			{Path: "/bin/app", Link: "../usr/bin/app"},
			{Path: "/tmp", Dir: true, Mode: 0o777 | os.ModeSticky},
			{Path: "/empty", Data: []byte{}},
		},
		Config: Config{
			Entrypoint:   []string{"/usr/bin/app"},
			Cmd:          []string{"--serve"},
			User:         NonRoot,
			Env:          []string{"MODE=test"},
			WorkingDir:   "/etc/app",
			ExposedPorts: []string{"8080/tcp", "53/udp"},
			Labels: map[string]string{
				"org.opencontainers.image.source":  "https://github.com/clusterset/clusterset",
				"org.opencontainers.image.title":   "app",
				"org.opencontainers.image.version": "v1.2.3",
			},
			StopSignal: "SIGINT",
		},
	}
}

func mustBuild(t *testing.T, spec Spec) v1.Image {
	t.Helper()
	img, err := Build(spec)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestBuildConfig(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	img := mustBuild(t, testSpec(t))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User = %q, want 65532:65532", c.User)
	}
	if !reflect.DeepEqual(c.Entrypoint, []string{"/usr/bin/app"}) || !reflect.DeepEqual(c.Cmd, []string{"--serve"}) {
		t.Errorf("Entrypoint, Cmd = %q, %q", c.Entrypoint, c.Cmd)
	}
	if want := []string{DefaultPath, "MODE=test"}; !reflect.DeepEqual(c.Env, want) {
		t.Errorf("Env = %q, want %q (the default PATH first)", c.Env, want)
	}
	if c.WorkingDir != "/etc/app" || c.StopSignal != "SIGINT" {
		t.Errorf("WorkingDir, StopSignal = %q, %q", c.WorkingDir, c.StopSignal)
	}
	if want := map[string]struct{}{"8080/tcp": {}, "53/udp": {}}; !reflect.DeepEqual(c.ExposedPorts, want) {
		t.Errorf("ExposedPorts = %v, want %v", c.ExposedPorts, want)
	}
	if c.Labels["org.opencontainers.image.source"] != "https://github.com/clusterset/clusterset" ||
		c.Labels["org.opencontainers.image.title"] != "app" || c.Labels["org.opencontainers.image.version"] != "v1.2.3" {
		t.Errorf("Labels = %v", c.Labels)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform = %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !cf.Created.Equal(time.Unix(0, 0)) {
		t.Errorf("Created = %v, want the Unix epoch without SOURCE_DATE_EPOCH", cf.Created)
	}
	if len(cf.RootFS.DiffIDs) != 1 || len(cf.History) != 1 || !cf.History[0].Created.Equal(time.Unix(0, 0)) {
		t.Errorf("rootfs %v, history %v: want one layer with one history entry at the epoch", cf.RootFS.DiffIDs, cf.History)
	}

	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("manifest %s with config %s, want the OCI media types", m.MediaType, m.Config.MediaType)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("layers = %v, want one %s", m.Layers, types.OCILayer)
	}

	// Without a user, entrypoint or working directory the image runs as
	// root from /, and an explicit PATH is kept as it is.
	bare := mustBuild(t, Spec{Files: []File{{Path: "/x", Data: []byte("x")}}, Config: Config{Env: []string{"PATH=/bin"}}, Architecture: "arm64"})
	bcf, _ := bare.ConfigFile()
	if bcf.Config.User != "" || bcf.Config.WorkingDir != "/" || !reflect.DeepEqual(bcf.Config.Env, []string{"PATH=/bin"}) || bcf.Architecture != "arm64" {
		t.Errorf("bare config: user %q, dir %q, env %q, arch %s", bcf.Config.User, bcf.Config.WorkingDir, bcf.Config.Env, bcf.Architecture)
	}
}

type entry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	link     string
	data     string
}

// layerEntries reads the image's only layer back.
func layerEntries(t *testing.T, img v1.Image) ([]entry, []time.Time) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v, %v", layers, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []entry
	var times []time.Time
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out = append(out, entry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, string(data)})
		times = append(times, h.ModTime)
	}
	return out, times
}

func TestLayerContentsAndModes(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	got, times := layerEntries(t, mustBuild(t, testSpec(t)))
	// Sorted by path, parents first, parents created root-owned 0755, the
	// source's own mode (0600) replaced by the File's.
	want := []entry{
		{"bin/", tar.TypeDir, 0o755, 0, 0, "", ""},
		{"bin/app", tar.TypeSymlink, 0o777, 0, 0, "../usr/bin/app", ""},
		{"empty", tar.TypeReg, 0o644, 0, 0, "", ""},
		{"etc/", tar.TypeDir, 0o755, 0, 0, "", ""},
		{"etc/app/", tar.TypeDir, 0o755, 0, 0, "", ""},
		{"etc/app/config.yaml", tar.TypeReg, 0o644, 65532, 65532, "", "a: 1\n"},
		{"tmp/", tar.TypeDir, 0o1777, 0, 0, "", ""},
		{"usr/", tar.TypeDir, 0o755, 0, 0, "", ""},
		{"usr/bin/", tar.TypeDir, 0o755, 0, 0, "", ""},
		{"usr/bin/app", tar.TypeReg, 0o755, 0, 0, "", "#!binary\n"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layer entries:\n got %v\nwant %v", got, want)
	}
	for i, mt := range times {
		if !mt.Equal(time.Unix(0, 0)) {
			t.Errorf("%s has time %v, want the epoch", got[i].name, mt)
		}
	}
}

func TestSameInputsSameDigest(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	spec := testSpec(t)
	first := digestOf(t, mustBuild(t, spec))

	// The source file's time and the order of Files do not matter.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(spec.Files[0].Source, later, later); err != nil {
		t.Fatal(err)
	}
	reversed := spec
	reversed.Files = nil
	for i := len(spec.Files) - 1; i >= 0; i-- {
		reversed.Files = append(reversed.Files, spec.Files[i])
	}
	if again := digestOf(t, mustBuild(t, reversed)); again != first {
		t.Errorf("same inputs gave %s, then %s", first, again)
	}

	// The contents, a mode and a label do.
	changed := map[string]func(*Spec){
		"contents": func(s *Spec) { s.Files[1].Data = []byte("a: 2\n") },
		"mode":     func(s *Spec) { s.Files[0].Mode = 0o750 },
		"label":    func(s *Spec) { s.Config.Labels = map[string]string{"org.opencontainers.image.version": "v2"} },
	}
	for what, change := range changed {
		s := testSpec(t)
		change(&s)
		if d := digestOf(t, mustBuild(t, s)); d == first {
			t.Errorf("changing the %s kept digest %s", what, d)
		}
	}

	// Writing the same image twice gives the same tarball bytes.
	img := mustBuild(t, spec)
	var a, b bytes.Buffer
	if err := WriteTarball(&a, "clusterset.dev/app:dev", img); err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(&b, "clusterset.dev/app:dev", mustBuild(t, spec)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two tarballs of the same inputs differ")
	}
}

func TestSourceDateEpochHonoured(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	atEpoch := digestOf(t, mustBuild(t, testSpec(t)))

	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	want := time.Unix(1700000000, 0)
	img := mustBuild(t, testSpec(t))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Equal(want) || !cf.History[0].Created.Equal(want) {
		t.Errorf("created %v, history %v, want %v", cf.Created, cf.History[0].Created, want)
	}
	entries, times := layerEntries(t, img)
	for i, mt := range times {
		if !mt.Equal(want) {
			t.Errorf("%s has time %v, want %v", entries[i].name, mt, want)
		}
	}
	if d := digestOf(t, img); d == atEpoch {
		t.Error("SOURCE_DATE_EPOCH did not change the digest")
	}
	if d := digestOf(t, mustBuild(t, testSpec(t))); d != digestOf(t, img) {
		t.Error("two builds at the same SOURCE_DATE_EPOCH differ")
	}

	// An explicit Spec.Created wins over the variable.
	s := testSpec(t)
	s.Created = time.Unix(42, 0)
	cf, _ = mustBuild(t, s).ConfigFile()
	if !cf.Created.Equal(time.Unix(42, 0)) {
		t.Errorf("Created with Spec.Created = %v", cf.Created)
	}

	for _, bad := range []string{"yesterday", "-5", "1.5"} {
		t.Setenv("SOURCE_DATE_EPOCH", bad)
		if _, err := Build(testSpec(t)); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
			t.Errorf("SOURCE_DATE_EPOCH=%s: err = %v, want one naming the variable", bad, err)
		}
	}
}

func TestBuildRejectsBadFiles(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	dir := t.TempDir()
	cases := map[string]File{
		"not absolute":    {Path: "etc/x", Data: []byte("x")},
		"root":            {Path: "/", Dir: true},
		"two kinds":       {Path: "/x", Data: []byte("x"), Link: "y"},
		"missing source":  {Path: "/x", Source: filepath.Join(dir, "nope")},
		"source is a dir": {Path: "/x", Source: dir},
	}
	for name, f := range cases {
		if _, err := Build(Spec{Files: []File{f}}); err == nil {
			t.Errorf("%s: Build accepted %+v", name, f)
		}
	}
	dup := []File{{Path: "/x", Data: []byte("1")}, {Path: "/x/", Data: []byte("2")}}
	if _, err := Build(Spec{Files: dup}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate path: err = %v", err)
	}
}
