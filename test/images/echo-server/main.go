// Command echo-server answers every HTTP request with the name of the pod it
// runs in and a newline, so that a client of a multi-cluster service can see
// which backend (and so which cluster) served it. It is the echo-server image
// of `make images` and plays the part nginx plays in the classic MCS
// walkthrough, in a few megabytes and without a shell.
//
// The pod name comes from POD_NAME (set it from the downward API,
// fieldRef metadata.name) or else the hostname, which Kubernetes sets to the
// pod name. It listens on -listen, default $LISTEN_ADDRESS or ":8080", serves
// /healthz for probes, logs one JSON line per request and stops cleanly on
// SIGTERM or SIGINT, finishing requests in flight.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownTimeout bounds how long requests in flight may take after SIGTERM;
// it stays under Kubernetes's default 30s grace period.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "echo-server:", err)
		os.Exit(1)
	}
}

// run parses args, listens and serves until ctx ends, then shuts down.
// getenv and logOut stand for the process environment and stdout so that
// tests can run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer) error {
	flags := flag.NewFlagSet("echo-server", flag.ContinueOnError)
	defaultListen := getenv("LISTEN_ADDRESS")
	if defaultListen == "" {
		defaultListen = ":8080"
	}
	listen := flags.String("listen", defaultListen, "address to listen on (env LISTEN_ADDRESS)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flags.Args())
	}

	log := slog.New(slog.NewJSONHandler(logOut, nil))
	name, err := podName(getenv)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler(name, log),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("listening", "address", ln.Addr().String(), "pod", name)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "reason", context.Cause(ctx).Error())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// podName is POD_NAME or, when unset, the hostname (the pod name, unless the
// pod sets spec.hostname).
func podName(getenv func(string) string) (string, error) {
	if n := getenv("POD_NAME"); n != "" {
		return n, nil
	}
	n, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("POD_NAME is unset and the hostname is unknown: %w", err)
	}
	return n, nil
}

// handler answers /healthz with "ok" and anything else with the pod name.
func handler(name string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Logged before answering, so that the line exists once the client
		// has its answer.
		log.Info("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, name+"\n")
	})
	return mux
}
