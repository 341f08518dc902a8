// Command images builds the repository's container images as tarballs,
// without Docker and without pulling anything: what `make images` runs.
//
//	go run ./hack/images [-out DIR] [-registry clusterset.dev] [-tag dev] [NAME...]
//
// NAME is one of clusterset-controller, coredns, echo-server, client and
// pause (all of them when none is given). Each image is written to
// DIR/NAME.tar (default .cache/images) under the reference REGISTRY/NAME:TAG,
// and DIR/images.txt lists name, reference and digest. One line per image
// reports its time and digest. Run it from the repository's top directory
// (make does). docs/images.md describes the images.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/clusterset/clusterset/internal/imagebuild"
)

func main() {
	out := flag.String("out", "", "directory for the tarballs and images.txt (default .cache/images)")
	registry := flag.String("registry", imagebuild.DefaultRegistry, "registry (and path) in front of each image name")
	tag := flag.String("tag", imagebuild.DefaultTag, "tag of every image")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./hack/images [flags] [NAME...]\nNAME: %v (default: all)\n", imagebuild.Names)
		flag.PrintDefaults()
	}
	flag.Parse()

	root, err := findRoot()
	if err != nil {
		fail(err)
	}
	opts := imagebuild.Options{
		Root:     root,
		OutDir:   *out,
		Registry: *registry,
		Tag:      *tag,
		Progress: os.Stdout,
	}
	if opts.OutDir != "" {
		if opts.OutDir, err = filepath.Abs(opts.OutDir); err != nil {
			fail(err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	results, err := imagebuild.Build(ctx, opts, flag.Args())
	if err != nil {
		fail(err)
	}
	if len(results) > 0 {
		fmt.Printf("[images %5.1fs] %d images in %s (list: %s)\n", time.Since(start).Seconds(), len(results),
			filepath.Dir(results[0].Path), filepath.Join(filepath.Dir(results[0].Path), "images.txt"))
	}
}

// module is the path in the repository's go.mod, which marks its top
// directory (hack/tools has a go.mod of its own).
const module = "github.com/clusterset/clusterset"

// findRoot returns the nearest directory at or above the working directory
// whose go.mod is this module's, so that the command works from any
// directory of the repository.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(data) == module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s at or above the working directory: run from the repository", module)
		}
		dir = parent
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "images:", err)
	os.Exit(1)
}

// modulePath returns the path of go.mod's module directive.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
