package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/clusterset/clusterset/internal/blackhole"
)

// A Cloud Map endpoint that accepts connections and never answers fails each
// call within one RequestTimeout instead of holding it forever: an attempt
// that timed out is not retried at once, whatever MaxAttempts says.
func TestEndpointThatNeverAnswersTimesOut(t *testing.T) {
	r := newTestRegistry(t, "http://"+blackhole.Start(t), "set", "cls-a", func(o *Options) {
		o.RequestTimeout = 300 * time.Millisecond
		o.MaxAttempts = 10
	})
	rec := sampleRecord("set", "cls-a", "ns", "web", "10.0.0.1")
	for name, call := range map[string]func(context.Context) error{
		"Publish":   func(ctx context.Context) error { return r.Publish(ctx, &rec) },
		"Withdraw":  func(ctx context.Context) error { return r.Withdraw(ctx, rec.Key()) },
		"Heartbeat": func(ctx context.Context) error { return r.Heartbeat(ctx) },
	} {
		start := time.Now()
		if err := call(context.Background()); err == nil {
			t.Errorf("%s against an endpoint that never answers: no error", name)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s took %v, want about the 300ms request timeout (a timed-out attempt is not retried)", name, took)
		}
	}
}

// A Cloud Map endpoint that refuses connections (down, or not there) fails
// each call after unreachableAttempts quick attempts, not after MaxAttempts
// backoffs (about a minute at the defaults), so that exports say Failed
// while the registry is down and the reconcile workers are not held.
func TestEndpointThatRefusesFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	r := newTestRegistry(t, "http://"+addr, "set", "cls-a", func(o *Options) {
		o.MaxAttempts = 10 // the default
	})
	rec := sampleRecord("set", "cls-a", "ns", "web", "10.0.0.1")
	for name, call := range map[string]func(context.Context) error{
		"Publish":   func(ctx context.Context) error { return r.Publish(ctx, &rec) },
		"Withdraw":  func(ctx context.Context) error { return r.Withdraw(ctx, rec.Key()) },
		"Heartbeat": func(ctx context.Context) error { return r.Heartbeat(ctx) },
	} {
		before := attempts(r)
		start := time.Now()
		if err := call(context.Background()); err == nil {
			t.Errorf("%s against an endpoint that refuses connections: no error", name)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s took %v, want under a second (a refused connection is tried %d times)", name, took, unreachableAttempts)
		}
		if n := attempts(r) - before; n != unreachableAttempts {
			t.Errorf("%s made %d attempts, want %d", name, n, unreachableAttempts)
		}
	}
}

// Unreachable tells a failure to connect (no request sent) from other
// errors, which keep the standard retries.
func TestUnreachable(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{fmt.Errorf("send: %w", &url.Error{Op: "Post", URL: "http://x", Err: refused}), true},
		{&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, true},
		{&net.OpError{Op: "proxyconnect", Net: "tcp", Err: refused}, true},
		{reset, false},
		{errors.New("ThrottlingException"), false},
		{nil, false},
	} {
		if got := unreachable(c.err); got != c.want {
			t.Errorf("unreachable(%v) = %t, want %t", c.err, got, c.want)
		}
	}
}

// attempts is how many API attempts r has made.
func attempts(r *Registry) int {
	n := 0
	for _, c := range r.calls.snapshot() {
		n += c
	}
	return n
}
