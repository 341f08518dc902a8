package registrylink

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// members counts the clusters with a heartbeat in the registry by
	// liveness state, as this cluster judges them.
	members = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterset_members",
		Help: "Clusters of the clusterset with a heartbeat in the registry, by state: alive, or stale (no heartbeat for longer than --liveness-grace-period; their endpoints are withdrawn from imports).",
	}, []string{"state"})
	// heartbeatAge is, per cluster, how old its last heartbeat was when
	// this cluster last looked.
	heartbeatAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterset_member_heartbeat_age_seconds",
		Help: "Seconds since this cluster saw each cluster's heartbeat renewed, on this cluster's clock, as of its last liveness check (every --heartbeat-interval).",
	}, []string{"cluster"})
	// clusterIDConflict is 1 while another member holds this member's
	// cluster ID, so that this one writes nothing.
	clusterIDConflict = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "clusterset_cluster_id_conflict",
		Help: "1 while another member (another cluster, told apart by its kube-system namespace UID) holds this member's cluster ID and renews its heartbeat: this member then writes nothing to the registry. 0 otherwise.",
	})
	// gracePeriod is --liveness-grace-period, so that alerts compare
	// heartbeat ages with the setting in force.
	gracePeriod = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "clusterset_liveness_grace_period_seconds",
		Help: "--liveness-grace-period in seconds: how long a cluster may miss heartbeats before its endpoints leave imports; 0 when the check is off.",
	})
)

func init() {
	metrics.Registry.MustRegister(members, heartbeatAge, gracePeriod, clusterIDConflict)
}
