package images

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestFullName(t *testing.T) {
	for in, want := range map[string]string{
		"clusterset.dev/clusterset-controller:dev": "clusterset.dev/clusterset-controller:dev",
		"ghcr.io/clusterset/clusterset-controller": "ghcr.io/clusterset/clusterset-controller:latest",
		"busybox:1.36":       "docker.io/library/busybox:1.36",
		"localhost:5000/x:y": "localhost:5000/x:y",
	} {
		if got, err := FullName(in); err != nil || got != want {
			t.Errorf("FullName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "UPPER/case:x", "x@sha256:0123456789012345678901234567890123456789012345678901234567890123"} {
		if _, err := FullName(bad); err == nil {
			t.Errorf("FullName(%q) accepted it", bad)
		}
	}
}

// TestTarballIsOCILayoutAndDockerArchive writes a tarball and reads it back
// the way each consumer does: go-containerregistry's OCI layout reader (what
// containerd's importer follows: oci-layout, then index.json and its
// annotations) and its docker-archive reader (what docker load follows:
// manifest.json's Config, Layers and RepoTags).
func TestTarballIsOCILayoutAndDockerArchive(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	img := mustBuild(t, testSpec(t))
	path := filepath.Join(t.TempDir(), "out", "app.tar")
	const ref = "clusterset.dev/app:dev"
	if err := WriteTarballFile(path, ref, img); err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := img.Digest()
	wantConfig, _ := img.ConfigName()
	wantLayer, _ := img.LayerByDigest(mustLayerDigest(t, img))
	wantDiffID, _ := wantLayer.DiffID()

	// Every entry of the archive itself has the image's time and fixed
	// ownership.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(time.Unix(1700000000, 0)) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: time %v owner %d:%d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		target := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(target, 0o755)
			continue
		}
		data, _ := io.ReadAll(tr)
		if err := os.WriteFile(target, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantNames := []string{
		"oci-layout", "blobs/", "blobs/sha256/",
		"blobs/sha256/" + wantConfig.Hex,
		"blobs/sha256/" + mustLayerDigest(t, img).Hex,
		"blobs/sha256/" + wantDigest.Hex,
		"index.json", "manifest.json",
	}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("archive entries:\n got %v\nwant %v", names, wantNames)
	}

	// The OCI half: one manifest, the image's own digest, named for
	// containerd and by tag.
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("reading the OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.Digest != wantDigest {
		t.Errorf("index.json names %s, want the image's digest %s", desc.Digest, wantDigest)
	}
	if desc.Annotations["io.containerd.image.name"] != ref || desc.Annotations["org.opencontainers.image.ref.name"] != "dev" {
		t.Errorf("index.json annotations = %v", desc.Annotations)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" {
		t.Errorf("index.json platform = %v", desc.Platform)
	}
	fromLayout, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyLayers(fromLayout); err != nil {
		t.Errorf("OCI layout layers: %v", err)
	}

	// The docker half: the same config and layer under the full name.
	tag, _ := name.NewTag(ref)
	fromDocker, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("reading manifest.json as docker load does: %v", err)
	}
	if got, _ := fromDocker.ConfigName(); got != wantConfig {
		t.Errorf("docker archive config %s, want %s", got, wantConfig)
	}
	layers, err := fromDocker.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("docker archive layers %v, %v", layers, err)
	}
	if got, _ := layers[0].DiffID(); got != wantDiffID {
		t.Errorf("docker archive layer diff ID %s, want %s", got, wantDiffID)
	}
	var dockerManifest []struct{ RepoTags []string }
	data, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(data, &dockerManifest); err != nil || len(dockerManifest) != 1 ||
		!reflect.DeepEqual(dockerManifest[0].RepoTags, []string{ref}) {
		t.Errorf("manifest.json = %s (%v), want RepoTags [%s]", data, err, ref)
	}

	// No temporary file is left beside the tarball.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("output directory holds %v, want only app.tar", entries)
	}
}

func TestWriteTarballRejectsBadReference(t *testing.T) {
	img := mustBuild(t, testSpec(t))
	path := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteTarballFile(path, "Not A Reference", img); err == nil {
		t.Error("WriteTarballFile accepted a malformed reference")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a failed write left %s behind (%v)", path, err)
	}
}

func mustLayerDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	m, err := img.Manifest()
	if err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest %v, %v", m, err)
	}
	return m.Layers[0].Digest
}

// verifyLayers checks that each layer blob hashes to its digest.
func verifyLayers(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		want, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		got, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("layer blob %s hashes to %s", want, got)
		}
	}
	return nil
}
