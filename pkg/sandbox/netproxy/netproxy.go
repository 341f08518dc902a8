// Package netproxy joins the sandbox's real nodes, each in a network
// namespace of its own, to the control planes that listen on the machine's
// loopback, without giving the nodes any route out of their namespaces and
// without any address on the machine's own interfaces.
//
// One process serves two kinds of bridge:
//
//   - a Forward listens on an address inside a node's network namespace (the
//     kube-apiserver's advertised address, moto's address) and relays every
//     connection to a loopback address of the machine: this is how kubelet,
//     kube-proxy and pods reach their API server and the registry;
//   - a Connect serves HTTP CONNECT on a Unix socket in the file system and
//     dials the requested address inside a node's network namespace: the
//     kube-apiserver's egress selector sends its "cluster" traffic (kubelet
//     logs, exec, port-forward, service and pod proxy) through it.
//
// A socket belongs to the network namespace it was created in, whichever
// thread uses it later, so the listeners and dials are made inside the
// namespace (github.com/containernetworking/plugins/pkg/ns) and the copying
// runs on ordinary goroutines.
package netproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Config is what one netproxy process serves, read from a JSON file.
type Config struct {
	Forwards []Forward `json:"forwards,omitempty"`
	Connects []Connect `json:"connects,omitempty"`
}

// Forward relays connections accepted on Listen inside NetNS to Target in
// the proxy's own (the machine's) network namespace.
type Forward struct {
	// NetNS is the path of the network namespace, e.g. /var/run/netns/NAME.
	NetNS string `json:"netns"`
	// Listen is IP:PORT inside NetNS.
	Listen string `json:"listen"`
	// Target is IP:PORT in the machine's namespace, normally on 127.0.0.1.
	Target string `json:"target"`
}

// Connect serves HTTP CONNECT on the Unix socket Socket and dials the
// requested host:port inside NetNS.
type Connect struct {
	NetNS  string `json:"netns"`
	Socket string `json:"socket"`
}

// ReadConfig reads a Config from a JSON file.
func ReadConfig(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &c, nil
}

// Run opens every listener of cfg, then serves until ctx ends. It returns an
// error at once when a listener cannot be opened (a missing namespace, an
// address in use), so that its caller sees the failure instead of a silent
// half-working bridge.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}
	var wg sync.WaitGroup
	for _, f := range cfg.Forwards {
		l, err := listenIn(f.NetNS, "tcp", f.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("forward %s in %s: %w", f.Listen, f.NetNS, err)
		}
		listeners = append(listeners, l)
		target := f.Target
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(l, func() (net.Conn, error) { return net.DialTimeout("tcp", target, 5*time.Second) }, log.With("listen", f.Listen, "target", target))
		}()
	}
	for _, c := range cfg.Connects {
		_ = os.Remove(c.Socket)
		l, err := net.Listen("unix", c.Socket)
		if err != nil {
			closeAll()
			return fmt.Errorf("connect proxy on %s: %w", c.Socket, err)
		}
		listeners = append(listeners, l)
		srv := &http.Server{Handler: connectHandler(c.NetNS, log.With("socket", c.Socket)), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = srv.Serve(l)
		}()
	}
	log.Info("serving", "forwards", len(cfg.Forwards), "connects", len(cfg.Connects))
	<-ctx.Done()
	closeAll()
	wg.Wait()
	return nil
}

// listenIn opens a listener inside the network namespace at path.
func listenIn(path, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// dialIn dials addr from inside the network namespace at path.
func dialIn(path, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

func serve(l net.Listener, dial func() (net.Conn, error), log *slog.Logger) {
	for {
		in, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Error("accept", "err", err)
			}
			return
		}
		go func() {
			out, err := dial()
			if err != nil {
				log.Warn("dial", "err", err)
				_ = in.Close()
				return
			}
			pipe(in, out)
		}()
	}
}

// pipe copies both ways until both directions are done, passing half-closes
// on so that request/response protocols end cleanly.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// connectHandler answers HTTP CONNECT host:port by dialing it inside netns
// and splicing the client's connection to it.
func connectHandler(netns string, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "only CONNECT is served here", http.StatusMethodNotAllowed)
			return
		}
		out, err := dialIn(netns, r.Host)
		if err != nil {
			log.Warn("dial", "target", r.Host, "err", err)
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			_ = out.Close()
			http.Error(w, "cannot hijack", http.StatusInternalServerError)
			return
		}
		in, buf, err := hj.Hijack()
		if err != nil {
			_ = out.Close()
			return
		}
		if _, err := io.WriteString(in, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			_ = in.Close()
			_ = out.Close()
			return
		}
		// Bytes the client sent right after its CONNECT request are already
		// in the reader's buffer.
		if n := buf.Reader.Buffered(); n > 0 {
			pending := make([]byte, n)
			_, _ = io.ReadFull(buf.Reader, pending)
			if _, err := out.Write(pending); err != nil {
				_ = in.Close()
				_ = out.Close()
				return
			}
		}
		pipe(in, out)
	})
}
