package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotation keys of index.json. containerd names an imported image after
// the first; the second is the OCI image layout's own (a tag, by the
// convention docker save and buildx follow).
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationOCIRefName     = "org.opencontainers.image.ref.name"
)

// FullName returns ref ("name:tag", "registry/name:tag") in the fully
// qualified form containerd stores and lists, e.g. "busybox" becomes
// "docker.io/library/busybox:latest". It fails on a malformed reference or
// one with a digest: a tarball names its image by tag.
func FullName(ref string) (string, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	registry := tag.RegistryStr()
	if registry == name.DefaultRegistry {
		// go-containerregistry spells Docker Hub index.docker.io;
		// containerd and Docker spell it docker.io.
		registry = "docker.io"
	}
	return registry + "/" + tag.RepositoryStr() + ":" + tag.TagStr(), nil
}

// WriteTarball writes img to w as one tar archive that is at the same time:
//
//   - an OCI image layout (oci-layout, index.json, blobs/sha256/...), which
//     `ctr images import` reads, keeping the manifest and its digest as they
//     are and naming the image after index.json's io.containerd.image.name
//     annotation;
//   - a docker save archive (manifest.json naming the config and layer blobs
//     and the RepoTags), which `docker load` and `kind load image-archive`
//     read.
//
// Both halves share the blobs, so the archive costs no more than either. This
// is the layout `docker save` itself writes since Docker 25. The image is
// named ref (see FullName). The archive's own entries carry the image's
// creation time, so the same image always gives the same bytes.
func WriteTarball(w io.Writer, ref string, img v1.Image) error {
	fullName, err := FullName(ref)
	if err != nil {
		return err
	}
	tag, _ := name.NewTag(ref) // FullName has parsed it already
	cfgFile, err := img.ConfigFile()
	if err != nil {
		return err
	}
	mtime := cfgFile.Created.Time
	rawManifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	manifestDigest, err := img.Digest()
	if err != nil {
		return err
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return err
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		return writeTarFile(tw, name, int64(len(data)), bytes.NewReader(data), mtime)
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	blobPath := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

	configPath := blobPath(configName)
	if err := put(configPath, rawConfig); err != nil {
		return err
	}
	layerPaths := make([]string, 0, len(layers))
	written := map[v1.Hash]bool{}
	for _, l := range layers {
		digest, err := l.Digest()
		if err != nil {
			return err
		}
		layerPaths = append(layerPaths, blobPath(digest))
		if written[digest] {
			continue
		}
		written[digest] = true
		if err := writeLayer(tw, blobPath(digest), l, mtime); err != nil {
			return err
		}
	}
	if err := put(blobPath(manifestDigest), rawManifest); err != nil {
		return err
	}

	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mediaType,
			Digest:    manifestDigest,
			Size:      int64(len(rawManifest)),
			Platform:  cfgFile.Platform(),
			Annotations: map[string]string{
				annotationContainerdName: fullName,
				annotationOCIRefName:     tag.TagStr(),
			},
		}},
	}
	rawIndex, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := put("index.json", rawIndex); err != nil {
		return err
	}

	// docker load reads only this file and the blobs it names; its field
	// names are Docker's, capitalised.
	dockerManifest := []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{{Config: configPath, RepoTags: []string{fullName}, Layers: layerPaths}}
	rawDocker, err := json.Marshal(dockerManifest)
	if err != nil {
		return err
	}
	if err := put("manifest.json", rawDocker); err != nil {
		return err
	}
	return tw.Close()
}

// WriteTarballFile writes img as WriteTarball does into the file at path,
// replacing it only once the whole archive is written, so an interrupted
// build never leaves a truncated tarball behind.
func WriteTarballFile(path, ref string, img v1.Image) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := WriteTarball(tmp, ref, img); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writeLayer(tw *tar.Writer, name string, l v1.Layer, mtime time.Time) error {
	size, err := l.Size()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	return writeTarFile(tw, name, size, rc, mtime)
}

func writeTarFile(tw *tar.Writer, name string, size int64, r io.Reader, mtime time.Time) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: mtime}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, r); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}
