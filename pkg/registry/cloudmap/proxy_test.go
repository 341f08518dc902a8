package cloudmap

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy is a reverse proxy on 127.0.0.1 in front of moto that can
// answer ThrottlingException to some requests or fail every request (an
// outage), the way Cloud Map's front end does.
type faultProxy struct {
	URL string

	mu        sync.Mutex
	throttle  func(target string, n int) bool         // by X-Amz-Target and request number
	refuse    func(target string, body []byte) string // an error type to answer instead of moto, or ""
	delay     func(target string, body []byte) time.Duration
	down      bool
	n         int
	throttled atomic.Int64
	passed    atomic.Int64
}

func newFaultProxy(t testing.TB, motoURL string) *faultProxy {
	t.Helper()
	u, err := url.Parse(motoURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // cancelled polls at test end are expected
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.Header.Get("X-Amz-Target")
		if i := strings.LastIndex(target, "."); i >= 0 {
			target = target[i+1:]
		}
		// The throttle function runs under the lock: tests keep state in it
		// (streaks) and requests arrive concurrently.
		var body []byte
		if r.Body != nil {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		p.mu.Lock()
		p.n++
		down := p.down
		throttle := p.throttle != nil && p.throttle(target, p.n)
		refused := ""
		if p.refuse != nil {
			refused = p.refuse(target, body)
		}
		var delay time.Duration
		if p.delay != nil {
			delay = p.delay(target, body)
		}
		p.mu.Unlock()
		time.Sleep(delay)
		switch {
		case refused != "":
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"__type":"` + refused + `","message":"injected by the test proxy"}`))
		case down:
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"__type":"ServiceUnavailableException","message":"injected outage"}`))
		case throttle:
			p.throttled.Add(1)
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.Header().Set("X-Amzn-ErrorType", "ThrottlingException")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"__type":"ThrottlingException","message":"Rate exceeded"}`))
		default:
			p.passed.Add(1)
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *faultProxy) setThrottle(f func(target string, n int) bool) {
	p.mu.Lock()
	p.throttle = f
	p.mu.Unlock()
}

// setRefuse makes the proxy answer a request with the error type f returns
// for it (by X-Amz-Target and JSON body), when not "".
func (p *faultProxy) setRefuse(f func(target string, body []byte) string) {
	p.mu.Lock()
	p.refuse = f
	p.mu.Unlock()
}

// setDelay makes the proxy hold each request for the time f returns for it
// (by X-Amz-Target and JSON body) before it answers, as a slower Cloud Map
// would.
func (p *faultProxy) setDelay(f func(target string, body []byte) time.Duration) {
	p.mu.Lock()
	p.delay = f
	p.mu.Unlock()
}

// discoveryRefusal is what refuseDiscovery set up: while on, the proxy
// refuses the matching requests; it counts them either way.
type discoveryRefusal struct {
	on   atomic.Bool
	seen atomic.Int64
}

// refuseDiscovery makes p answer code, as a Cloud Map that does not show a
// write yet would, to the DiscoverInstances and DiscoverInstancesRevision
// requests whose JSON body holds every one of fragments, while the
// returned refusal is on (it starts on).
func refuseDiscovery(p *faultProxy, code string, fragments ...string) *discoveryRefusal {
	d := &discoveryRefusal{}
	d.on.Store(true)
	p.setRefuse(func(target string, body []byte) string {
		if !strings.HasPrefix(target, "DiscoverInstances") {
			return ""
		}
		for _, f := range fragments {
			if !strings.Contains(string(body), f) {
				return ""
			}
		}
		d.seen.Add(1)
		if d.on.Load() {
			return code
		}
		return ""
	})
	return d
}

func (p *faultProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}
