// Package images builds small single-layer container images from a list of
// files, without Docker, a Dockerfile or a base image pulled from a registry,
// and writes them as tarballs that both `ctr images import` and `docker load`
// accept (see WriteTarball).
//
// Images are reproducible: every timestamp is fixed (SOURCE_DATE_EPOCH when
// set, else the Unix epoch), files are written in sorted order with explicit
// owner and mode, and nothing of the build machine (user names, umask, file
// times) leaks in. Building the same inputs twice with the same Go toolchain
// gives the same manifest digest.
//
// The image manifest and config use the OCI media types
// (application/vnd.oci.image.manifest.v1+json and
// application/vnd.oci.image.config.v1+json) and the one layer is a gzipped
// tar (application/vnd.oci.image.layer.v1.tar+gzip): containerd, Docker and
// registries accept them, and they are what a registry-bound image should
// carry. docs/images.md explains the choice.
package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonRoot is the user and group of distroless's "nonroot" user. Kubernetes
// manifests that set runAsNonRoot need a numeric user in the image, so images
// name it by number.
const NonRoot = "65532:65532"

// DefaultPath is the PATH an image gets when its Config.Env does not set one.
// Container runtimes do not add one themselves, and a shell or exec.LookPath
// inside the container needs it.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// File is one entry of an image's filesystem: a regular file (from Source on
// the build machine or from Data), a symbolic link (Link) or a directory
// (Dir). Build fills in the parent directories that are not listed.
type File struct {
	// Path is the absolute path inside the image, e.g. "/etc/passwd".
	Path string
	// Source is a regular file on the build machine whose contents are
	// copied (symbolic links to it are followed). Its mode and times are not:
	// Mode decides the mode.
	Source string
	// Data is the contents of a file that exists only in memory. Used when
	// Source, Link and Dir are all empty (an empty Data makes an empty file).
	Data []byte
	// Link makes the entry a symbolic link pointing at Link, e.g. "busybox"
	// for /bin/sh.
	Link string
	// Dir makes the entry a directory.
	Dir bool
	// Mode is the permission bits plus optionally fs.ModeSetuid,
	// fs.ModeSetgid and fs.ModeSticky. Zero means 0644 for a file, 0755 for a
	// directory; a symbolic link is always 0777.
	Mode fs.FileMode
	// UID and GID own the entry; zero is root.
	UID, GID int
}

// Config is what the image's config tells a runtime about starting a
// container. It maps one to one onto the OCI image config's "config" object.
type Config struct {
	// Entrypoint and Cmd are the command, as in a Dockerfile's exec form.
	Entrypoint []string
	Cmd        []string
	// User is "uid:gid" (NonRoot, for example) or "" for root.
	User string
	// Env holds "NAME=value" entries. DefaultPath is added when no entry
	// sets PATH.
	Env []string
	// WorkingDir is the directory the command starts in; "" means "/".
	WorkingDir string
	// ExposedPorts are "port/protocol" entries such as "8080/tcp". They only
	// document the ports: Kubernetes ignores them.
	ExposedPorts []string
	// Labels are the image's labels, typically the OCI annotation keys
	// org.opencontainers.image.source, .title, .version and .description.
	Labels map[string]string
	// StopSignal is the signal that asks the command to stop, e.g.
	// "SIGTERM"; "" leaves the runtime's default (SIGTERM).
	StopSignal string
}

// Spec is everything an image is built from.
type Spec struct {
	// Files make up the image's only layer, in any order.
	Files []File
	// Config says how a container of the image starts.
	Config Config
	// OS and Architecture name the platform of the binaries in Files, as
	// GOOS and GOARCH do. Empty means "linux" and the architecture of the Go
	// program that calls Build (runtime.GOARCH).
	OS, Architecture string
	// Created is the time written into the config, the history and every
	// file of the layer. The zero value means SourceDateEpoch().
	Created time.Time
}

// SourceDateEpoch returns the time of the SOURCE_DATE_EPOCH environment
// variable (seconds since the Unix epoch, the convention of
// reproducible-builds.org), or the Unix epoch itself when it is unset. It is
// the time every Build without Spec.Created uses, so that rebuilding the same
// inputs gives the same digest.
func SourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	secs, err := strconv.ParseInt(s, 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative number of seconds", s)
	}
	return time.Unix(secs, 0).UTC(), nil
}

// Build returns the single-layer image that spec describes. The layer is
// built and compressed in memory, so the returned image can be written
// (WriteTarball) any number of times without reading spec's files again.
// It fails when a path is relative or listed twice, when a Source is missing
// or not a regular file, or when an entry sets more than one of Source,
// Link, Dir and Data.
func Build(spec Spec) (v1.Image, error) {
	created := spec.Created
	if created.IsZero() {
		var err error
		if created, err = SourceDateEpoch(); err != nil {
			return nil, err
		}
	}
	// Tar headers and the config keep whole seconds only; truncating here
	// keeps them equal to each other.
	created = created.Truncate(time.Second).UTC()

	layerBytes, err := layerTarGzip(spec.Files, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("reading back the layer: %w", err)
	}

	osName, arch := spec.OS, spec.Architecture
	if osName == "" {
		osName = "linux"
	}
	if arch == "" {
		arch = runtime.GOARCH
	}
	cfg := &v1.ConfigFile{
		Architecture: arch,
		OS:           osName,
		Created:      v1.Time{Time: created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       runtimeConfig(spec.Config),
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "github.com/clusterset/clusterset/pkg/images",
		},
		MediaType: types.OCILayer,
	})
	if err != nil {
		return nil, err
	}
	// Computing the digest now surfaces any error of the lazy mutate chain
	// here rather than in the writer.
	if _, err := img.Digest(); err != nil {
		return nil, err
	}
	return img, nil
}

func runtimeConfig(c Config) v1.Config {
	env := append([]string(nil), c.Env...)
	hasPath := false
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			hasPath = true
		}
	}
	if !hasPath {
		env = append([]string{DefaultPath}, env...)
	}
	out := v1.Config{
		Entrypoint: c.Entrypoint,
		Cmd:        c.Cmd,
		User:       c.User,
		Env:        env,
		WorkingDir: c.WorkingDir,
		StopSignal: c.StopSignal,
	}
	if out.WorkingDir == "" {
		out.WorkingDir = "/"
	}
	if len(c.ExposedPorts) > 0 {
		out.ExposedPorts = map[string]struct{}{}
		for _, p := range c.ExposedPorts {
			out.ExposedPorts[p] = struct{}{}
		}
	}
	if len(c.Labels) > 0 {
		out.Labels = make(map[string]string, len(c.Labels))
		for k, v := range c.Labels {
			out.Labels[k] = v
		}
	}
	return out
}

// layerTarGzip writes files (plus their missing parent directories) as one
// gzipped tar in path order, with every time set to created.
func layerTarGzip(files []File, created time.Time) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("%s is listed twice", f.Path)
		}
		kinds := 0
		for _, set := range []bool{f.Source != "", f.Link != "", f.Dir, f.Data != nil} {
			if set {
				kinds++
			}
		}
		if kinds > 1 {
			return nil, fmt.Errorf("%s: set only one of Source, Data, Link and Dir", f.Path)
		}
		f.Path = p
		entries[p] = f
	}
	// Parent directories that are not listed are root-owned 0755, as a
	// Dockerfile COPY would create them.
	for p := range entries {
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if _, ok := entries[dir]; !ok {
				entries[dir] = File{Path: dir, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	// A directory sorts before everything under it, as a tar reader that
	// creates files as it goes needs.
	sort.Strings(paths)

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, p := range paths {
		if err := writeEntry(tw, entries[p], created); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", errors.New("the image root / cannot be an entry")
	}
	return c, nil
}

func writeEntry(tw *tar.Writer, f File, created time.Time) error {
	hdr := &tar.Header{
		// Layer tars name entries relative to the root, without "./".
		Name:    strings.TrimPrefix(f.Path, "/"),
		Uid:     f.UID,
		Gid:     f.GID,
		ModTime: created,
		Mode:    tarMode(f),
	}
	switch {
	case f.Dir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		return tw.WriteHeader(hdr)
	case f.Link != "":
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = f.Link
		return tw.WriteHeader(hdr)
	case f.Source != "":
		src, err := os.Open(f.Source)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		defer src.Close()
		info, err := src.Stat()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s: source %s is not a regular file", f.Path, f.Source)
		}
		hdr.Typeflag = tar.TypeReg
		hdr.Size = info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		// A file that changes while it is copied makes the tar writer fail
		// on the size mismatch rather than write a corrupt layer.
		if _, err := io.Copy(tw, src); err != nil {
			return fmt.Errorf("%s: copying %s: %w", f.Path, f.Source, err)
		}
		return nil
	default:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(len(f.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
}

// tarMode turns a File's mode into the tar header's Unix mode bits.
func tarMode(f File) int64 {
	if f.Link != "" {
		return 0o777
	}
	perm := f.Mode.Perm()
	if perm == 0 && f.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == 0 {
		perm = 0o644
		if f.Dir {
			perm = 0o755
		}
	}
	m := int64(perm)
	if f.Mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if f.Mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if f.Mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}
