package cloudmap

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// decodeInstances turns the instances of one Cloud Map service (already
// de-duplicated) into one record per cluster of clusterSetID. Instances of
// other clustersets and of no clusterset (other writers sharing the
// namespace) are left out silently. Every instance of clusterSetID that is
// not read into its cluster's record is reported to bad with its ID and the
// reason: one that does not parse, of a kind this version does not know, or
// a second marker of its cluster. A cluster whose record cannot be decoded
// is left out with one call of bad, with markerID's ID for it when it has a
// marker, else its first endpoint instance's; when
// registry.ImportableClusterID rejects the cluster's ID, the error wraps
// registry.ErrUnimportableCluster.
func decodeInstances(clusterSetID, namespace, name string, insts []instance, bad func(id string, err error)) []registry.Record {
	type acc struct {
		marker    map[string]string
		markerID  string
		first     map[string]string // service attrs of the first endpoint instance by ID
		firstID   string
		endpoints map[string]*registry.Endpoint
		ports     map[string]registry.Port
	}
	// Cloud Map returns instances in no particular order; decoding them in
	// InstanceId order makes the result depend on the instances only (which
	// of two markers of one cluster counts, which port details win).
	insts = slices.Clone(insts)
	slices.SortFunc(insts, func(a, b instance) int { return strings.Compare(a.ID, b.ID) })
	byCluster := map[string]*acc{}
	get := func(c string) *acc {
		if byCluster[c] == nil {
			byCluster[c] = &acc{endpoints: map[string]*registry.Endpoint{}, ports: map[string]registry.Port{}}
		}
		return byCluster[c]
	}
	for _, in := range insts {
		a := in.Attrs
		if clusterSetOf(a) != clusterSetID {
			continue
		}
		cluster := a[attrClusterID]
		if cluster == "" {
			bad(in.ID, fmt.Errorf("no %s attribute", attrClusterID))
			continue
		}
		switch kind := a[attrRecordKind]; kind {
		case kindService:
			// The lowest InstanceId wins; ours is markerID, so another
			// one is someone else's, or left by a broken writer.
			if c := get(cluster); c.marker == nil {
				c.marker, c.markerID = a, in.ID
			} else {
				bad(in.ID, fmt.Errorf("a second marker of cluster %s; instance %s is read instead", cluster, c.markerID))
			}
			continue
		case "":
		default:
			// Reported, not only skipped: the instance claims the
			// clusterset, and its cluster's record is read without it.
			bad(in.ID, fmt.Errorf("%s %q is not one this version knows", attrRecordKind, kind))
			continue
		}
		ep, sp, err := decodeEndpoint(a)
		if err == nil {
			if herr := ep.Sanitize(); herr != nil {
				bad(in.ID, herr)
			}
			err = ep.Validate()
		}
		if err == nil && sp.Port != 0 {
			err = sp.Validate()
		}
		if err != nil {
			bad(in.ID, err)
			continue
		}
		c := get(cluster)
		if c.first == nil || in.ID < c.firstID {
			c.first, c.firstID = a, in.ID
		}
		if e, ok := c.endpoints[ep.Address]; ok {
			e.Ports = append(e.Ports, ep.Ports...)
			// Conditions are per endpoint; an instance saying not ready wins.
			e.Ready = e.Ready && ep.Ready
			e.Serving = e.Serving && ep.Serving
			e.Terminating = e.Terminating || ep.Terminating
		} else {
			c.endpoints[ep.Address] = &ep
		}
		if sp.Port != 0 {
			pk := fmt.Sprintf("%s/%s/%d", sp.Name, sp.Protocol, sp.Port)
			if _, ok := c.ports[pk]; !ok {
				c.ports[pk] = sp
			}
		}
	}

	var out []registry.Record
	for cluster, c := range byCluster {
		if err := registry.ImportableClusterID(cluster); err != nil {
			// Another writer's ID (ours are DNS labels): once per cluster,
			// not per instance.
			id := c.firstID
			if c.marker != nil {
				id = markerID(clusterSetID, cluster)
			}
			bad(id, err)
			continue
		}
		rec := registry.Record{ClusterSetID: clusterSetID, ClusterID: cluster, Namespace: namespace, Name: name}
		switch {
		case c.marker != nil:
			spec, err := decodeSpec(c.marker)
			if err != nil {
				bad(markerID(clusterSetID, cluster), err)
				continue
			}
			var wp []wirePort
			if err := json.Unmarshal([]byte(c.marker[attrServicePorts]), &wp); err != nil {
				bad(markerID(clusterSetID, cluster), fmt.Errorf("%s: %w", attrServicePorts, err))
				continue
			}
			for _, p := range wp {
				spec.Ports = append(spec.Ports, registry.Port{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: p.TargetPort})
			}
			rec.Spec = spec
			rec.Changed = recordChanged(c.marker)
		case c.first != nil:
			// Written by the AWS controller (or a marker we could not
			// write): the service-level spec comes from the endpoints.
			spec, err := decodeSpec(c.first)
			if err != nil {
				bad(c.firstID, err)
				continue
			}
			for _, p := range c.ports {
				spec.Ports = append(spec.Ports, p)
			}
			slices.SortFunc(spec.Ports, func(a, b registry.Port) int {
				return comparePorts(a.Port, a.Protocol, a.Name, b.Port, b.Protocol, b.Name)
			})
			if spec.SessionAffinity == "" {
				spec.SessionAffinity = corev1.ServiceAffinityNone
			}
			if len(spec.IPFamilies) == 0 {
				spec.IPFamilies = familiesOf(c.endpoints)
			}
			rec.Spec = spec
		default:
			continue
		}
		if err := rec.Spec.ValidatePorts(); err != nil {
			bad(markerID(clusterSetID, cluster), err)
			continue
		}
		for _, e := range c.endpoints {
			slices.SortFunc(e.Ports, func(a, b registry.EndpointPort) int {
				return comparePorts(a.Port, a.Protocol, a.Name, b.Port, b.Protocol, b.Name)
			})
			rec.Endpoints = append(rec.Endpoints, *e)
		}
		sort.Slice(rec.Endpoints, func(i, j int) bool { return rec.Endpoints[i].Address < rec.Endpoints[j].Address })
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClusterID < out[j].ClusterID })
	return out
}

// logSkipped returns the bad callback of decodeInstances for the view's
// read of key: each skipped instance at V(1), since other writers' and
// broken instances come back at every read, but a whole cluster left out at
// the default level, since its endpoints are then missing everywhere.
func (r *Registry) logSkipped(key registry.ServiceKey) func(id string, err error) {
	return func(id string, err error) {
		if errors.Is(err, registry.ErrUnimportableCluster) {
			r.log.Info("skipping a cluster's Cloud Map instances", "namespace", key.Namespace, "service", key.Name, "instance", id, "reason", err.Error())
			return
		}
		r.log.V(1).Info("skipping Cloud Map instance", "namespace", key.Namespace, "service", key.Name, "instance", id, "reason", err.Error())
	}
}

func familiesOf(eps map[string]*registry.Endpoint) []corev1.IPFamily {
	var v4, v6 bool
	for _, e := range eps {
		if e.AddressType == discoveryv1.AddressTypeIPv6 {
			v6 = true
		} else {
			v4 = true
		}
	}
	var out []corev1.IPFamily
	if v4 {
		out = append(out, corev1.IPv4Protocol)
	}
	if v6 {
		out = append(out, corev1.IPv6Protocol)
	}
	return out
}

// decodeSpec reads the service-level attributes (without ports).
func decodeSpec(a map[string]string) (registry.ServiceSpec, error) {
	var s registry.ServiceSpec
	switch t := registry.ServiceType(a[attrSvcType]); t {
	case registry.ClusterSetIP, registry.Headless:
		s.Type = t
	case "":
		s.Type = registry.ClusterSetIP
	default:
		return s, fmt.Errorf("unknown %s %q", attrSvcType, t)
	}
	if v, ok := a[attrExportCreated]; ok && v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("%s: %w", attrExportCreated, err)
		}
		s.ExportCreated = time.UnixMilli(ms).UTC()
	}
	s.SessionAffinity = corev1.ServiceAffinity(a[attrSessionAffinity])
	if v, ok := a[attrSessionConfig]; ok {
		s.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
		if err := json.Unmarshal([]byte(v), s.SessionAffinityConfig); err != nil {
			return s, fmt.Errorf("%s: %w", attrSessionConfig, err)
		}
	}
	if v := a[attrIPFamilies]; v != "" {
		for _, f := range strings.Split(v, ",") {
			s.IPFamilies = append(s.IPFamilies, corev1.IPFamily(f))
		}
	}
	if v, ok := a[attrInternalPolicy]; ok {
		p := corev1.ServiceInternalTrafficPolicy(v)
		s.InternalTrafficPolicy = &p
	}
	if v, ok := a[attrTrafficDist]; ok {
		s.TrafficDistribution = &v
	}
	if v, ok := a[attrExportedLabels]; ok {
		if err := json.Unmarshal([]byte(v), &s.ExportedLabels); err != nil {
			return s, fmt.Errorf("%s: %w", attrExportedLabels, err)
		}
	}
	if v, ok := a[attrExportedAnnots]; ok {
		if err := json.Unmarshal([]byte(v), &s.ExportedAnnotations); err != nil {
			return s, fmt.Errorf("%s: %w", attrExportedAnnots, err)
		}
	}
	return s, nil
}

// decodeEndpoint reads one endpoint instance: the endpoint with its single
// port, and the service port that instance belongs to.
func decodeEndpoint(a map[string]string) (registry.Endpoint, registry.Port, error) {
	var ep registry.Endpoint
	var sp registry.Port
	raw, family := a[attrIPv6], discoveryv1.AddressTypeIPv6
	if raw == "" {
		raw, family = a[attrIPv4], discoveryv1.AddressTypeIPv4
	}
	if raw == "" {
		return ep, sp, fmt.Errorf("no %s or %s attribute", attrIPv4, attrIPv6)
	}
	addr, _, err := normalizeAddr(raw)
	if err != nil {
		return ep, sp, err
	}
	port, err := parsePort(a, attrPort, false)
	if err != nil {
		return ep, sp, err
	}
	ep.Address, ep.AddressType = addr, family
	proto := corev1.Protocol(a[attrEPProtocol])
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	if port != 0 {
		ep.Ports = []registry.EndpointPort{{Name: a[attrEPPortName], Protocol: proto, Port: port}}
	}
	ep.Ready = parseBool(a[attrReady], false)
	// Serving defaults to Ready (what EndpointSlices do for old writers);
	// terminating defaults to false.
	ep.Serving = parseBool(a[attrServing], ep.Ready)
	ep.Terminating = parseBool(a[attrTerminating], false)
	ep.Hostname = a[attrHostname]
	ep.NodeName = a[attrNodeName]
	ep.Zone = a[attrZone]

	if port == 0 {
		return ep, sp, nil
	}
	sport, err := parsePort(a, attrSvcPort, false)
	if err != nil {
		return ep, sp, err
	}
	if sport == 0 {
		sport = port
	}
	sproto := corev1.Protocol(a[attrSvcProtocol])
	if sproto == "" {
		sproto = proto
	}
	sp = registry.Port{Name: a[attrSvcPortName], Protocol: sproto, Port: sport, TargetPort: a[attrSvcTarget]}
	if v, ok := a[attrAppProtocol]; ok {
		sp.AppProtocol = &v
	}
	return ep, sp, nil
}

func parsePort(a map[string]string, attr string, required bool) (int32, error) {
	v, ok := a[attr]
	if !ok || v == "" {
		if required {
			return 0, fmt.Errorf("no %s attribute", attr)
		}
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", attr, err)
	}
	if n == 0 {
		// 0 would read as "no port": a port-less endpoint, or a service
		// port taken from the endpoint's.
		return 0, fmt.Errorf("%s: port 0 is out of range 1-65535", attr)
	}
	return int32(n), nil
}

func parseBool(v string, def bool) bool {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def
	}
	return b
}

// dedupe keeps the last copy of every InstanceId (moto may return an old and
// a new copy after a re-registration; real Cloud Map never does) and returns
// how many copies each InstanceId had.
func dedupe(in []instance) ([]instance, map[string]int) {
	idx := map[string]int{}
	count := map[string]int{}
	var out []instance
	for _, i := range in {
		count[i.ID]++
		if k, ok := idx[i.ID]; ok {
			out[k] = i
			continue
		}
		idx[i.ID] = len(out)
		out = append(out, i)
	}
	return out, count
}

// comparePorts orders ports by number, then protocol, then name: the order
// decoded records list service and endpoint ports in.
func comparePorts(aPort int32, aProto corev1.Protocol, aName string, bPort int32, bProto corev1.Protocol, bName string) int {
	return cmp.Or(cmp.Compare(aPort, bPort), cmp.Compare(aProto, bProto), cmp.Compare(aName, bName))
}
