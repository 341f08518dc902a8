// Command clusterset-sandbox-netproxy bridges the sandbox's real nodes, each
// in its own network namespace, and the control planes on the machine's
// loopback (see pkg/sandbox/netproxy). The sandbox starts it; it is not part
// of a clusterset installation.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/clusterset/clusterset/pkg/sandbox/netproxy"
)

func main() {
	config := flag.String("config", "", "JSON file with the forwards and connect proxies to serve")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := netproxy.ReadConfig(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := netproxy.Run(ctx, cfg, log); err != nil {
		log.Error("netproxy failed", "err", err)
		os.Exit(1)
	}
}
