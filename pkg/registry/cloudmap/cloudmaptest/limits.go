package cloudmaptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Cloud Map's documented input constraints (AWS Cloud Map API Reference,
// API version 2017-03-14: CreateHttpNamespace, CreateService and
// RegisterInstance; the same as in the service model the AWS SDKs are
// generated from). moto checks none of them: StartMoto puts a proxy in front
// of it that refuses, as Cloud Map would, every request that breaks one, and
// fails the test for it.
const (
	MaxServiceName     = 127  // CreateService Name
	MaxNamespaceName   = 1024 // CreateHttpNamespace Name
	MaxInstanceID      = 64   // RegisterInstance InstanceId
	MaxRequestID       = 64   // CreatorRequestId of every operation
	MaxAttributes      = 30   // custom attributes of one instance
	MaxAttributeKey    = 255
	MaxAttributeValue  = 1024
	MaxAttributesTotal = 5000 // the lengths of every key and value of one instance
)

var (
	// A label of ServiceName: up to 63 letters, digits, '-' and '_', not
	// starting or ending with '-'; labels are separated by dots.
	serviceLabel = regexp.MustCompile(`^([a-zA-Z0-9_][a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_]|[a-zA-Z0-9])$`)
	// NamespaceNameHttp: printable ASCII, not an ARN.
	namespaceName = regexp.MustCompile(`^[!-~]+$`)
	instanceID    = regexp.MustCompile(`^[0-9a-zA-Z_/:.@-]+$`)
	attributeKey  = regexp.MustCompile(`^[a-zA-Z0-9!-~]+$`)
	// AttrValue: printable ASCII, with spaces and tabs after the first
	// character.
	attributeValue = regexp.MustCompile(`^([a-zA-Z0-9!-~][ \ta-zA-Z0-9!-~]*){0,1}[a-zA-Z0-9!-~]{0,1}$`)
)

// CheckRequest returns why Cloud Map would refuse, as InvalidInput, the JSON
// request body of operation op (the last part of its X-Amz-Target), or nil.
// Only the operations that carry names clusterset derives are checked.
func CheckRequest(op string, body []byte) error {
	switch op {
	case "CreateHttpNamespace", "CreateService", "RegisterInstance":
	default:
		return nil
	}
	var req struct {
		Name             *string
		InstanceId       *string
		CreatorRequestId *string
		Attributes       map[string]string
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return fmt.Errorf("%s: request body: %w", op, err)
	}
	if req.CreatorRequestId != nil && len(*req.CreatorRequestId) > MaxRequestID {
		return fmt.Errorf("%s: CreatorRequestId %q has %d characters, more than %d", op, *req.CreatorRequestId, len(*req.CreatorRequestId), MaxRequestID)
	}
	switch op {
	case "CreateHttpNamespace":
		if req.Name == nil || len(*req.Name) > MaxNamespaceName || !namespaceName.MatchString(*req.Name) || strings.HasPrefix(*req.Name, "arn:") {
			return fmt.Errorf("CreateHttpNamespace: Name %v is not 1-%d printable ASCII characters", req.Name, MaxNamespaceName)
		}
	case "CreateService":
		if req.Name == nil {
			return fmt.Errorf("CreateService: no Name")
		}
		return CheckServiceName(*req.Name)
	case "RegisterInstance":
		if req.InstanceId == nil {
			return fmt.Errorf("RegisterInstance: no InstanceId")
		}
		return CheckInstance(*req.InstanceId, req.Attributes)
	}
	return nil
}

// CheckServiceName returns why Cloud Map refuses name as a service name.
func CheckServiceName(name string) error {
	if name == "." {
		return nil
	}
	if len(name) > MaxServiceName {
		return fmt.Errorf("CreateService: Name %q has %d characters, more than %d", name, len(name), MaxServiceName)
	}
	for _, label := range strings.Split(name, ".") {
		if !serviceLabel.MatchString(label) {
			return fmt.Errorf("CreateService: Name %q: label %q does not match Cloud Map's ServiceName pattern", name, label)
		}
	}
	return nil
}

// CheckInstance returns why Cloud Map refuses to register an instance of
// this ID and attributes.
func CheckInstance(id string, attrs map[string]string) error {
	if len(id) > MaxInstanceID || !instanceID.MatchString(id) {
		return fmt.Errorf("RegisterInstance: InstanceId %q (%d characters) is not 1-%d of [0-9a-zA-Z_/:.@-]", id, len(id), MaxInstanceID)
	}
	if len(attrs) > MaxAttributes {
		return fmt.Errorf("RegisterInstance %s: %d attributes, more than %d", id, len(attrs), MaxAttributes)
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	total := 0
	for _, k := range keys {
		v := attrs[k]
		total += len(k) + len(v)
		if len(k) > MaxAttributeKey || !attributeKey.MatchString(k) {
			return fmt.Errorf("RegisterInstance %s: attribute key %q is not 1-%d printable ASCII characters", id, k, MaxAttributeKey)
		}
		if len(v) > MaxAttributeValue || !attributeValue.MatchString(v) {
			return fmt.Errorf("RegisterInstance %s: attribute %s: a value of %d characters is not up to %d printable ASCII characters", id, k, len(v), MaxAttributeValue)
		}
	}
	if total > MaxAttributesTotal {
		return fmt.Errorf("RegisterInstance %s: keys and values total %d characters, more than %d", id, total, MaxAttributesTotal)
	}
	return nil
}

// direct maps the URL of each limits proxy to the moto server behind it.
var direct sync.Map

// Direct returns the URL of the moto server behind url, a URL that StartMoto
// returned, or url itself when it is not one. Tests write through it what
// real Cloud Map refuses (attributes past its limits) to show that readers
// survive records no writer of ours would make: moto and other stores that
// speak Cloud Map's API do not check those limits, and the limits may
// change.
func Direct(url string) string {
	if d, ok := direct.Load(url); ok {
		return d.(string)
	}
	return url
}

// accepted maps the URL of each limits proxy to the count of connections
// it has accepted (*atomic.Int64).
var accepted sync.Map

// Connections returns how many connections the limits proxy at url, a URL
// that StartMoto returned, has accepted so far: how many its clients
// opened. It is 0 for any other URL.
func Connections(url string) int64 {
	if n, ok := accepted.Load(url); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// limitsProxy serves moto at target behind CheckRequest, and returns its URL.
// A refused request is answered with InvalidInput and fails t when t ends.
func limitsProxy(t testing.TB, target string) (string, error) {
	u, err := url.Parse(target)
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	var refused []string
	// Registered before the server's Close, so it runs after it: every
	// request has been answered by then.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, msg := range refused {
			t.Errorf("a request real Cloud Map would refuse: %s", msg)
		}
	})
	rp := httputil.NewSingleHostReverseProxy(u)
	// net/http keeps 2 idle connections per host by default: with more
	// calls in flight, the proxy would open a connection to moto for
	// almost every call, and moto, which starts a thread per connection,
	// would spend on that the CPU that the tests share with the
	// controllers. The clients' side is what Connections counts.
	toMoto := http.DefaultTransport.(*http.Transport).Clone()
	toMoto.MaxIdleConnsPerHost = toMoto.MaxIdleConns
	rp.Transport = toMoto
	rp.ErrorLog = log.New(io.Discard, "", 0) // cancelled polls at test end are expected
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		op := r.Header.Get("X-Amz-Target")
		if i := strings.LastIndex(op, "."); i >= 0 {
			op = op[i+1:]
		}
		if err := CheckRequest(op, body); err != nil {
			mu.Lock()
			refused = append(refused, err.Error())
			mu.Unlock()
			msg, _ := json.Marshal(err.Error())
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"__type":"InvalidInput","message":` + string(msg) + `}`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(toMoto.CloseIdleConnections)
	direct.Store(srv.URL, target)
	accepted.Store(srv.URL, &conns)
	t.Cleanup(func() { direct.Delete(srv.URL); accepted.Delete(srv.URL) })
	return srv.URL, nil
}
