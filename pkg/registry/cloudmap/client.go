package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// throttleCodes are the error codes Cloud Map (and the AWS front end) answer
// when a caller exceeds its request rate.
var throttleCodes = map[string]bool{
	"ThrottlingException":      true,
	"RequestLimitExceeded":     true,
	"Throttling":               true,
	"TooManyRequestsException": true,
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func isCode(err error, codes ...string) bool {
	c := errorCode(err)
	for _, want := range codes {
		if c == want {
			return true
		}
	}
	return false
}

// jitterBackoff is exponential backoff with jitter: attempt n waits a random
// duration in [d/2, d] with d = base*2^(n-1) capped at max, so that clusters
// throttled together do not retry together.
type jitterBackoff struct{ base, max time.Duration }

func (b jitterBackoff) BackoffDelay(attempt int, err error) (time.Duration, error) {
	if attempt >= unreachableAttempts && unreachable(err) {
		return 0, err // no further attempt: the SDK returns err
	}
	d := b.base
	for i := 1; i < attempt && d < b.max; i++ {
		d *= 2
	}
	if d > b.max {
		d = b.max
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1)), nil
}

// unreachableAttempts is how many attempts a call makes when it cannot
// connect to Cloud Map (refused, no route, no answer to the name lookup, the
// HTTPS proxy down; a name that does not exist the SDK never retries): a
// blip is tried once more, while an endpoint that is down fails the call within a
// second instead of after MaxAttempts backoffs (about a minute at the
// defaults), so that exports say Failed, reconcile workers are not held,
// and callers retry at their own pace (the next poll, the requeue).
// Throttling and 5xx answers keep MaxAttempts: Cloud Map is there and asks
// for patience.
const unreachableAttempts = 2

// unreachable reports whether err is a failure to connect, so that no
// request was sent: a dial error, of the connection or of the name lookup,
// to Cloud Map or to the HTTPS proxy.
func unreachable(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &dns) || (errors.As(err, &op) && (op.Op == "dial" || op.Op == "proxyconnect"))
}

// callCounter counts API attempts of one Registry by operation; tests use it
// to check the call-rate model.
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) add(op string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[op]++
	c.mu.Unlock()
}

func (c *callCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// newClient builds the servicediscovery client: the SDK's standard retryer
// (it retries throttling, 5xx and connection errors) with our jittered
// backoff and without the client-side retry quota, which would otherwise turn
// a long throttling episode into errors; a per-attempt middleware that
// counts requests and throttles.
// disableHostPrefix is an API option for clients with a custom endpoint
// (moto, a VPC endpoint): DiscoverInstances and DiscoverInstancesRevision go
// to the "data-servicediscovery" host, and that prefix must not be added.
func disableHostPrefix(s *middleware.Stack) error {
	return s.Initialize.Add(middleware.InitializeMiddlewareFunc("clustersetNoHostPrefix",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			return next.HandleInitialize(smithyhttp.DisableEndpointHostPrefix(ctx, true), in)
		}), middleware.Before)
}

func newClient(cfg aws.Config, o *Options, calls *callCounter) *sd.Client {
	// Added after the retry middleware, so it runs once per attempt: it
	// counts the attempt and bounds it by RequestTimeout (the SDK's default
	// HTTP client has none), so that an endpoint that accepts connections
	// but never answers fails the call instead of holding it forever.
	count := middleware.FinalizeMiddlewareFunc("clustersetCount",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			attemptCtx, cancel := context.WithTimeout(ctx, o.RequestTimeout)
			defer cancel()
			out, md, err := next.HandleFinalize(attemptCtx, in)
			if err != nil && ctx.Err() == nil && errors.Is(attemptCtx.Err(), context.DeadlineExceeded) {
				err = &attemptTimeout{after: o.RequestTimeout, err: err}
			}
			op := awsmiddleware.GetOperationName(ctx)
			calls.add(op)
			result := "ok"
			if err != nil {
				result = errorCode(err)
				if result == "" {
					result = "error"
				}
			}
			requestsTotal.WithLabelValues(op, result).Inc()
			if throttleCodes[result] {
				throttledTotal.WithLabelValues(op).Inc()
			}
			return out, md, err
		})
	endpoint := o.Endpoint
	if endpoint == "" && cfg.BaseEndpoint != nil {
		endpoint = *cfg.BaseEndpoint
	}
	return sd.NewFromConfig(cfg, func(so *sd.Options) {
		if endpoint != "" {
			so.BaseEndpoint = aws.String(endpoint)
			so.APIOptions = append(so.APIOptions, disableHostPrefix)
		}
		so.Retryer = retry.NewStandard(func(ro *retry.StandardOptions) {
			ro.MaxAttempts = o.MaxAttempts
			ro.MaxBackoff = o.RetryMaxDelay
			ro.Backoff = jitterBackoff{base: o.RetryBaseDelay, max: o.RetryMaxDelay}
			ro.RateLimiter = ratelimit.None
			// An endpoint that did not answer within RequestTimeout is not
			// tried again at once: the call fails, so that the caller
			// reports it (an export's Ready=False) within one timeout
			// rather than MaxAttempts of them, and retries at its pace.
			ro.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
				var at *attemptTimeout
				if errors.As(err, &at) {
					return aws.FalseTernary
				}
				return aws.UnknownTernary
			})}, ro.Retryables...)
		})
		so.APIOptions = append(so.APIOptions, func(s *middleware.Stack) error {
			return s.Finalize.Add(count, middleware.After)
		})
		// A client of the SDK's own kind (the default, also when
		// AWS_CA_BUNDLE or a proxy shaped it) keeps its settings and gets a
		// larger idle pool; a client the caller built is left as it is.
		if b, ok := so.HTTPClient.(*awshttp.BuildableClient); ok {
			so.HTTPClient = b.WithTransportOptions(keepIdleConnections)
		}
	})
}

// keepIdleConnections lets the transport keep as many idle connections to
// one host as it keeps in all, instead of the SDK's 10 per host. A Registry
// talks to one host, the Cloud Map endpoint, and has more calls in flight
// than 10 whenever the controller's workers publish at once (each Publish
// runs up to Options.Concurrency calls, and the poll runs its own). With 10,
// every connection above them was closed as soon as its call ended, so under
// load almost every call opened a new connection, a TLS handshake on the way
// to Cloud Map: 2,214 new connections for about 2,600 calls in a burst of
// 300 exports under moto (BenchmarkBurst; TestConnectionsReused holds it).
func keepIdleConnections(t *http.Transport) {
	t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, t.MaxIdleConns)
}

// attemptTimeout is the error of an attempt that got no answer within
// Options.RequestTimeout.
type attemptTimeout struct {
	after time.Duration
	err   error
}

func (e *attemptTimeout) Error() string {
	return fmt.Sprintf("no answer from Cloud Map within %s: %v", e.after, e.err)
}

func (e *attemptTimeout) Unwrap() error { return e.err }

// api wraps the SDK client with paging and the moto workarounds.
type api struct {
	c *sd.Client
}

type nsInfo struct {
	ID   string
	Name string
	Type sdtypes.NamespaceType
}

// listNamespaces pages through every namespace of the account (moto ignores
// paging; the result is the same).
func (a api) listNamespaces(ctx context.Context) ([]nsInfo, error) {
	var out []nsInfo
	p := sd.NewListNamespacesPaginator(a.c, &sd.ListNamespacesInput{MaxResults: aws.Int32(100)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, n := range page.Namespaces {
			out = append(out, nsInfo{ID: aws.ToString(n.Id), Name: aws.ToString(n.Name), Type: n.Type})
		}
	}
	return out, nil
}

type svcInfo struct {
	ID          string
	ARN         string
	Name        string
	NamespaceID string // filled by the caller: ServiceSummary has no namespace
	// Created is set on what Registry.service returns when that call
	// created the service, which therefore holds no instance yet; never on
	// what is cached.
	Created bool
}

// servicesPerPage is the most services one ListServices page returns (its
// largest MaxResults, Cloud Map API reference). moto answers in one page.
const servicesPerPage = 100

// listServices pages through the services of namespaceID (the NAMESPACE_ID
// filter, which moto honours with hack/moto's patch, as
// TestMotoAppliesListFilters checks), or of the whole account when it is
// empty. ServiceSummary carries no namespace ID, so callers of an account
// listing map services to namespaces with GetService (cached: a service
// never moves).
func (a api) listServices(ctx context.Context, namespaceID string) ([]svcInfo, error) {
	in := &sd.ListServicesInput{MaxResults: aws.Int32(servicesPerPage)}
	if namespaceID != "" {
		in.Filters = []sdtypes.ServiceFilter{{Name: sdtypes.ServiceFilterNameNamespaceId, Values: []string{namespaceID}, Condition: sdtypes.FilterConditionEq}}
	}
	var out []svcInfo
	p := sd.NewListServicesPaginator(a.c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range page.Services {
			out = append(out, svcInfo{ID: aws.ToString(s.Id), ARN: aws.ToString(s.Arn), Name: aws.ToString(s.Name)})
		}
	}
	return out, nil
}

// listInstances pages through the instances of a service (control plane,
// strongly consistent, unlike DiscoverInstances). Duplicates are kept: the
// caller needs their count.
func (a api) listInstances(ctx context.Context, serviceID string) ([]instance, error) {
	var out []instance
	p := sd.NewListInstancesPaginator(a.c, &sd.ListInstancesInput{ServiceId: aws.String(serviceID), MaxResults: aws.Int32(100)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, i := range page.Instances {
			out = append(out, instance{ID: aws.ToString(i.Id), Attrs: i.Attributes})
		}
	}
	return out, nil
}

// discover reads the instances of one service through the data plane,
// only those whose attribute filterAttr is filterValue unless filterAttr
// is "". Callers check the clusterset again. DiscoverInstances has no
// paging: it returns at most maxDiscoverResults instances, Cloud Map's
// quota of instances per service; readService reads fuller services.
func (a api) discover(ctx context.Context, namespace, service, filterAttr, filterValue string) ([]instance, int64, error) {
	in := &sd.DiscoverInstancesInput{
		NamespaceName: aws.String(namespace),
		ServiceName:   aws.String(service),
		MaxResults:    aws.Int32(maxDiscoverResults),
		HealthStatus:  sdtypes.HealthStatusFilterAll,
	}
	if filterAttr != "" {
		in.QueryParameters = map[string]string{filterAttr: filterValue}
	}
	out, err := a.c.DiscoverInstances(ctx, in)
	if err != nil {
		return nil, 0, err
	}
	insts := make([]instance, 0, len(out.Instances))
	for _, i := range out.Instances {
		insts = append(insts, instance{ID: aws.ToString(i.InstanceId), Attrs: i.Attributes})
	}
	return insts, aws.ToInt64(out.InstancesRevision), nil
}

func (a api) revision(ctx context.Context, namespace, service string) (int64, error) {
	out, err := a.c.DiscoverInstancesRevision(ctx, &sd.DiscoverInstancesRevisionInput{
		NamespaceName: aws.String(namespace),
		ServiceName:   aws.String(service),
	})
	if err != nil {
		return 0, err
	}
	return aws.ToInt64(out.InstancesRevision), nil
}

// waitOperation polls GetOperation until the operation ends and returns its
// targets.
func (a api) waitOperation(ctx context.Context, id string) (map[string]string, error) {
	delay := 50 * time.Millisecond
	for {
		out, err := a.c.GetOperation(ctx, &sd.GetOperationInput{OperationId: aws.String(id)})
		if err != nil {
			return nil, err
		}
		op := out.Operation
		switch op.Status {
		case sdtypes.OperationStatusSuccess:
			t := map[string]string{}
			for k, v := range op.Targets {
				t[string(k)] = v
			}
			return t, nil
		case sdtypes.OperationStatusFail:
			return nil, &OperationError{ID: id, Code: aws.ToString(op.ErrorCode), Message: aws.ToString(op.ErrorMessage)}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < 2*time.Second {
			delay *= 2
		}
	}
}

// OperationError is an asynchronous Cloud Map operation that failed.
type OperationError struct {
	ID, Code, Message string
}

func (e *OperationError) Error() string {
	return "cloudmap: operation " + e.ID + " failed: " + e.Code + ": " + e.Message
}
