package inspect

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// Verdict is the outcome of one doctor check.
type Verdict string

// Verdicts. Only Fail makes doctor exit non-zero.
const (
	OK   Verdict = "OK"
	Warn Verdict = "WARN"
	Fail Verdict = "FAIL"
)

// Check is one line of `kubectl clusterset doctor`.
type Check struct {
	// Name is what was checked: apis, identity, controller, coredns,
	// registry, heartbeat, clock or conflicts.
	Name string `json:"check"`
	// Cluster is the member checked; "" for the clusterset as a whole.
	Cluster string  `json:"cluster,omitempty"`
	Verdict Verdict `json:"verdict"`
	Message string  `json:"message"`
	// Fix says what to do when Verdict is not OK.
	Fix string `json:"fix,omitempty"`
}

// Bounds doctor judges by.
const (
	// MaxClockOffset is the largest clock difference between this machine
	// and a member that passes. Liveness compares a heartbeat's renew time,
	// written by one member's clock, with another member's clock.
	MaxClockOffset = 10 * time.Second
	// defaultLease is how long a heartbeat lasts when it does not say
	// (the backends' default).
	defaultLease = registry.DefaultLeaseDuration
)

// multiclusterPlugin finds, on one line of a Corefile without comments, the
// multicluster plugin serving clusterset.local (config/coredns/Corefile).
var multiclusterPlugin = regexp.MustCompile(`(?m)^[ \t]*multicluster([ \t]+\S+)*[ \t]+clusterset\.local\.?[ \t]*(\{|$)`)

// comment is a Corefile comment, to the end of its line.
var comment = regexp.MustCompile(`#[^\n]*`)

// Doctor judges what was read: per member, then across the clusterset.
// now is the time heartbeats are judged at.
func Doctor(clusters []*Cluster, h RegistryHealth, now time.Time) []Check {
	var out []Check
	ids := map[string][]string{}
	sets := map[string][]string{}
	for _, cl := range clusters {
		if cl.ClusterID != "" {
			ids[cl.ClusterID] = append(ids[cl.ClusterID], cl.Context)
		}
		if cl.ClusterSetID != "" {
			sets[cl.ClusterSetID] = append(sets[cl.ClusterSetID], cl.Context)
		}
	}
	for _, cl := range clusters {
		out = append(out, member(cl, ids, h, now)...)
	}
	out = append(out, clustersetChecks(clusters, sets, h, now)...)
	return out
}

// Failed reports whether any check failed.
func Failed(checks []Check) bool {
	return slices.ContainsFunc(checks, func(c Check) bool { return c.Verdict == Fail })
}

func member(cl *Cluster, ids map[string][]string, h RegistryHealth, now time.Time) []Check {
	name := cl.Name()
	check := func(n string, v Verdict, msg, fix string) Check {
		return Check{Name: n, Cluster: name, Verdict: v, Message: msg, Fix: fix}
	}
	if cl.Problem != "" {
		return []Check{check("reachable", Fail, cl.Problem, "check the context with `kubectl --context "+cl.Context+" get --raw /version`, and that its user may list ServiceExports, ServiceImports and EndpointSlices")}
	}
	var out []Check
	if len(cl.MissingAPIs) > 0 {
		out = append(out, check("apis", Fail, "not served: "+strings.Join(cl.MissingAPIs, ", "),
			"install the CRDs: `kubectl apply --server-side -k config/crd` (the chart installs them too)"))
	} else {
		out = append(out, check("apis", OK, "ServiceExport, ServiceImport and ClusterProperty are served", ""))
	}

	switch {
	case cl.IdentityProblem != "":
		out = append(out, check("identity", Fail, cl.IdentityProblem,
			"set the controller's --cluster-id and --clusterset-id (chart values clusterID, clusterSetID) or create the ClusterProperties cluster.clusterset.k8s.io and clusterset.k8s.io (KEP-2149)"))
	case len(validation.IsDNS1123Label(cl.ClusterID)) > 0:
		out = append(out, check("identity", Fail, fmt.Sprintf("cluster ID %q is not a DNS label", cl.ClusterID),
			"a cluster ID must be a DNS label (KEP-2149), since it is a DNS name part"))
	case len(ids[cl.ClusterID]) > 1:
		others := slices.DeleteFunc(slices.Clone(ids[cl.ClusterID]), func(c string) bool { return c == cl.Context })
		out = append(out, check("identity", Fail, fmt.Sprintf("cluster ID %q is also the ID of context %s", cl.ClusterID, strings.Join(others, ", ")),
			"give every member an ID of its own: recreate the ClusterProperty cluster.clusterset.k8s.io of one of them and re-run `kubectl clusterset join`"))
	default:
		out = append(out, check("identity", OK, fmt.Sprintf("cluster %s of clusterset %s", cl.ClusterID, cl.ClusterSetID), ""))
	}

	out = append(out, controllerCheck(cl, now, check))
	out = append(out, coreDNSCheck(cl, check))
	out = append(out, registryCheck(cl, h, check))
	if off := cl.ClockOffset; off > MaxClockOffset || off < -MaxClockOffset {
		out = append(out, check("clock", Fail, fmt.Sprintf("the API server's clock is %s off this machine's", off.Round(time.Second)),
			"run NTP (chrony, systemd-timesyncd) on the member's nodes: liveness compares clocks of different members"))
	} else {
		out = append(out, check("clock", OK, fmt.Sprintf("within %s of this machine's", MaxClockOffset), ""))
	}
	return out
}

func controllerCheck(cl *Cluster, now time.Time, check func(string, Verdict, string, string) Check) Check {
	if why := cl.Unchecked["controller"]; why != "" {
		return check("controller", Warn, "not checked: "+why, "doctor needs get on Deployments and Leases in "+cl.ControllerNamespace)
	}
	ns := cl.ControllerNamespace
	d := cl.Controller
	if d == nil {
		return check("controller", Fail, "no clusterset-controller Deployment; looked for "+cmp.Or(cl.ControllerSearch, ns+"/"+ControllerName),
			"install clusterset-controller: `helm install clusterset charts/clusterset -n "+ControllerNamespace+" --create-namespace` (docs/install.md); "+
				"if it runs under another name, pass its namespace with --controller-namespace")
	}
	if len(cl.OtherControllers) > 0 {
		return check("controller", Fail, fmt.Sprintf("%d clusterset-controller Deployments: %s/%s and %s; each would write this cluster's records",
			1+len(cl.OtherControllers), d.Namespace, d.Name, strings.Join(cl.OtherControllers, ", ")),
			"uninstall all but one (`helm uninstall -n NAMESPACE RELEASE` or `kubectl delete -k` of the overlay)")
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	ready := fmt.Sprintf("%d/%d replicas available", d.Status.AvailableReplicas, want)
	if d.Status.AvailableReplicas == 0 {
		return check("controller", Fail, ready, "see `kubectl -n "+ns+" describe deployment "+d.Name+"` and the pods' logs")
	}
	l := cl.Lease
	if l == nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return check("controller", Fail, ready+", no leader (Lease "+ns+"/"+ControllerName+" has no holder)",
			"see the pods' logs for leader election errors; the controller needs --leader-elect and RBAC for Leases in "+ns)
	}
	if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil &&
		now.Sub(l.Spec.RenewTime.Time) > time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second+MaxClockOffset {
		return check("controller", Fail, fmt.Sprintf("%s, the leader %s last renewed its Lease %s ago", ready, *l.Spec.HolderIdentity, duration.HumanDuration(now.Sub(l.Spec.RenewTime.Time))),
			"the leader is hung or gone: see its logs; deleting its pod hands over to a standby")
	}
	return check("controller", OK, ready+", leader "+*l.Spec.HolderIdentity, "")
}

func coreDNSCheck(cl *Cluster, check func(string, Verdict, string, string) Check) Check {
	const patch = "add `multicluster clusterset.local` to the kubernetes block and clusterset.local to its zones: `kubectl -n kube-system patch configmap coredns --patch-file config/coredns/corefile-patch.yaml` (docs/install.md)"
	switch {
	case cl.Unchecked["coredns"] != "":
		return check("coredns", Warn, "not checked: "+cl.Unchecked["coredns"], "doctor needs get on ConfigMaps in "+CoreDNSNamespace+" and create on SubjectAccessReviews")
	case cl.CoreDNSProblem != "":
		return check("coredns", Fail, cl.CoreDNSProblem, patch)
	case !multiclusterPlugin.MatchString(comment.ReplaceAllString(cl.Corefile, "")):
		return check("coredns", Fail, "the Corefile has no multicluster plugin for clusterset.local: <service>.<namespace>.svc.clusterset.local does not resolve", patch)
	case len(cl.CoreDNSDenied) > 0:
		return check("coredns", Fail, "CoreDNS's ServiceAccount "+CoreDNSNamespace+"/"+CoreDNSAccount+" may not "+strings.Join(cl.CoreDNSDenied, ", "),
			"`kubectl apply -k config/coredns` (or the chart's coredns.rbac.create=true)")
	}
	return check("coredns", OK, "the multicluster plugin serves clusterset.local and may read ServiceImports and EndpointSlices", "")
}

func registryCheck(cl *Cluster, h RegistryHealth, check func(string, Verdict, string, string) Check) Check {
	if cl.Registry == "cloudmap" {
		return cloudMapCheck(h, check)
	}
	const rejoin = "re-run `kubectl clusterset join` for this member with the hub's admin context: it writes new credentials"
	if cl.HubProblem != "" {
		return check("registry", Fail, cl.HubProblem, rejoin)
	}
	a, ok := h.Access[cl.Context]
	switch {
	case !ok:
		return check("registry", Fail, "the identity is unknown, so the hub namespace cannot be checked", "fix the identity first")
	case a.Unreachable:
		return check("registry", Warn, "the hub cannot be reached from this machine ("+a.Problem+"); the member's pods may still reach it",
			"run doctor where the hub's address (in Secret "+cl.HubSecret+") is reachable")
	case a.Problem != "":
		return check("registry", Fail, a.Problem, rejoin)
	case !a.WriteOwn:
		return check("registry", Fail, "the member's hub credentials may not write its own records in "+hub.NamespaceName(cl.ClusterSetID, cl.ClusterID), rejoin)
	case a.WriteOther || a.ReadSecrets:
		return check("registry", Fail, "the member's hub credentials may do more than write its own records (another member's records or Secrets): a compromised member could speak for others",
			"bind the member's hub identity only to the Role that join creates in its own namespace and the ClusterRole "+hub.ReaderRole().Name+" (docs/security.md)")
	}
	msg := "hub reachable; the member may write its own records and nothing else"
	if cl.HubVia != "" {
		msg += " (" + cl.HubVia + ")"
	}
	return check("registry", OK, msg, "")
}

// cloudMapCheck judges what this machine could read of Cloud Map. The
// controller writes with its own IAM role, which this command does not
// hold: its heartbeat (the heartbeat check) shows that it writes, and Cloud
// Map cannot limit it to its own records (docs/security.md).
func cloudMapCheck(h RegistryHealth, check func(string, Verdict, string, string) Check) Check {
	const readOnly = "give this machine's AWS identity servicediscovery:DiscoverInstances (config/iam/cloudmap-readonly-policy.json), through AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; the region is the controller's AWS_REGION, else AWS_REGION here"
	switch {
	case h.HeartbeatUnreachable:
		return check("registry", Warn, "Cloud Map cannot be reached from this machine ("+h.HeartbeatProblem+"); the member's pods may still reach it",
			"run doctor where the Cloud Map endpoint is reachable (AWS_ENDPOINT_URL sets another)")
	case h.HeartbeatProblem != "":
		return check("registry", Warn, "Cloud Map not read: "+h.HeartbeatProblem, readOnly)
	}
	return check("registry", OK, "Cloud Map read with "+h.Read+"; the controller writes with its own IAM role (its heartbeat shows it does)", "")
}

func clustersetChecks(clusters []*Cluster, sets map[string][]string, h RegistryHealth, now time.Time) []Check {
	var out []Check
	if len(sets) > 1 {
		var parts []string
		for _, id := range slices.Sorted(maps.Keys(sets)) {
			parts = append(parts, fmt.Sprintf("%s (%s)", id, strings.Join(sets[id], ", ")))
		}
		out = append(out, Check{Name: "identity", Verdict: Fail, Message: "the contexts belong to different clustersets: " + strings.Join(parts, "; "),
			Fix: "give each context the clusterset's ID, or run doctor on one clusterset's contexts (--contexts)"})
	}

	switch {
	case h.HeartbeatUnreachable:
		out = append(out, Check{Name: "heartbeat", Verdict: Warn, Message: "not read: the registry cannot be reached from this machine (" + h.HeartbeatProblem + ")",
			Fix: "run doctor where the registry is reachable (see the registry check)"})
	case h.HeartbeatProblem != "" && h.Backend == "cloudmap":
		// This machine's AWS credentials, not the members', failed.
		out = append(out, Check{Name: "heartbeat", Verdict: Warn, Message: "not read: " + h.HeartbeatProblem, Fix: "see the registry check"})
	case h.HeartbeatProblem != "":
		out = append(out, Check{Name: "heartbeat", Verdict: Fail, Message: h.HeartbeatProblem, Fix: "fix the registry check first"})
	default:
		seen := map[string]bool{}
		for _, hb := range h.Heartbeats {
			seen[hb.ClusterID] = true
			lease := hb.LeaseDuration
			if lease <= 0 {
				lease = defaultLease
			}
			age := now.Sub(hb.RenewTime)
			if age > lease {
				out = append(out, Check{Name: "heartbeat", Cluster: hb.ClusterID, Verdict: Fail,
					Message: fmt.Sprintf("silent: last heartbeat %s ago (lease %s); its endpoints are withdrawn from imports after the liveness grace period", duration.HumanDuration(age), lease),
					Fix:     "check that member's clusterset-controller (`kubectl clusterset doctor --contexts` with its context) and its path to the registry"})
			} else {
				out = append(out, Check{Name: "heartbeat", Cluster: hb.ClusterID, Verdict: OK, Message: fmt.Sprintf("fresh (lease %s)", lease)})
			}
		}
		for _, cl := range clusters {
			if cl.ClusterID != "" && cl.Problem == "" && !seen[cl.ClusterID] {
				out = append(out, Check{Name: "heartbeat", Cluster: cl.ClusterID, Verdict: Fail, Message: "no heartbeat in the registry: the controller has never renewed one",
					Fix: "check the controller: it heartbeats once elected leader and joined"})
			}
		}
	}

	var conflicts []string
	for _, s := range List(clusters) {
		for _, c := range s.Conflicts {
			conflicts = append(conflicts, fmt.Sprintf("%s/%s in %s: %s", s.Namespace, s.Name, c.Cluster, c.Reason))
		}
	}
	if len(conflicts) > 0 {
		out = append(out, Check{Name: "conflicts", Verdict: Warn, Message: strings.Join(conflicts, "; "),
			Fix: "make the exporting clusters' Services agree; `kubectl clusterset status SERVICE -n NAMESPACE` shows each export's Conflict message (docs/semantics.md)"})
	} else {
		out = append(out, Check{Name: "conflicts", Verdict: OK, Message: "no export reports a conflict"})
	}
	return out
}
