package cloudmap

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// requestsTotal counts every Cloud Map API attempt (retries included) by
	// operation and result: "ok" or the AWS error code.
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterset_cloudmap_requests_total",
		Help: "Cloud Map API attempts by operation and result (ok or the AWS error code), retries included.",
	}, []string{"operation", "result"})

	// throttledTotal counts attempts that Cloud Map throttled
	// (ThrottlingException, RequestLimitExceeded, ...); each was retried with
	// jittered exponential backoff.
	throttledTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterset_cloudmap_throttled_requests_total",
		Help: "Cloud Map API attempts rejected by throttling and retried with jittered backoff, by operation.",
	}, []string{"operation"})

	// viewErrorsTotal counts failed refreshes of the registry view; the view
	// keeps its last good content.
	viewErrorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "clusterset_cloudmap_view_refresh_errors_total",
		Help: "Failed refreshes of the Cloud Map registry view (the view keeps its last good records).",
	})

	// oversizedReadsTotal counts reads of Cloud Map services that hold more
	// instances than one DiscoverInstances returns (readService): result
	// "complete" when filtered reads returned every instance of the
	// clusterset, "incomplete" when even those came back full.
	oversizedReadsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterset_cloudmap_oversized_reads_total",
		Help: "Reads of Cloud Map services holding more instances than one DiscoverInstances returns (1,000), by result: complete (the clusterset's instances were read with filtered reads) or incomplete (even those were cut at 1,000).",
	}, []string{"result"})

	// scanQueuedServices is the length of the scan queue (scanQueue): the
	// services queued for a check that the polls spread over their spare
	// time.
	scanQueuedServices = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "clusterset_cloudmap_queued_checks",
		Help: "Cloud Map services queued for a check that polls spread over their spare time (a namespace whose change beacon moved without naming the change, a full resync, the foreign check of a mixed clusterset); 0 when the view has caught up.",
	})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, throttledTotal, viewErrorsTotal, oversizedReadsTotal, scanQueuedServices)
	// Both series exist from the start, so that alerts see a rise from 0.
	oversizedReadsTotal.WithLabelValues("complete")
	oversizedReadsTotal.WithLabelValues("incomplete")
}
