// Package blackhole is a TCP endpoint for tests that accepts connections and
// never answers: a server that is stopped (SIGSTOP), overloaded, or behind a
// network that drops replies. Clients connect at once and then wait.
package blackhole

import (
	"net"
	"sync"
	"testing"
)

// Start listens on 127.0.0.1 and returns the address. Connections are
// accepted, held without a byte written, and closed when the test ends.
func Start(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}
