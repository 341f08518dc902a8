package cloudmap

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Attributes of the AWS Cloud Map MCS controller's schema. Every endpoint
// instance we write carries all of them, with the same spelling and value
// formats, so that the AWS controller imports our records and we import its.
const (
	attrIPv4          = "AWS_INSTANCE_IPV4"
	attrIPv6          = "AWS_INSTANCE_IPV6" // the AWS controller's IPv6 form
	attrPort          = "AWS_INSTANCE_PORT"
	attrClusterSetID  = "CLUSTERSET_ID"
	attrClusterID     = "CLUSTER_ID"
	attrEPPortName    = "ENDPOINT_PORT_NAME"
	attrEPProtocol    = "ENDPOINT_PROTOCOL"
	attrHostname      = "HOSTNAME"
	attrController    = "K8S_CONTROLLER"
	attrNodeName      = "NODENAME"
	attrReady         = "READY"
	attrExportCreated = "SERVICE_EXPORT_CREATION_TIMESTAMP"
	attrSvcPort       = "SERVICE_PORT"
	attrSvcPortName   = "SERVICE_PORT_NAME"
	attrSvcProtocol   = "SERVICE_PROTOCOL"
	attrSvcTarget     = "SERVICE_TARGET_PORT"
	attrSvcType       = "SERVICE_TYPE"
)

// Our own attributes. Readers that do not know them (the AWS controller)
// ignore them; our readers use defaults when they are missing.
const (
	attrServing         = "SERVING"
	attrTerminating     = "TERMINATING"
	attrZone            = "ZONE"
	attrAppProtocol     = "SERVICE_APP_PROTOCOL"
	attrSessionAffinity = "SESSION_AFFINITY"
	attrSessionConfig   = "SESSION_AFFINITY_CONFIG"  // compact JSON of corev1.SessionAffinityConfig
	attrIPFamilies      = "IP_FAMILIES"              // comma separated
	attrInternalPolicy  = "INTERNAL_TRAFFIC_POLICY"  // absent = nil
	attrTrafficDist     = "TRAFFIC_DISTRIBUTION"     // absent = nil
	attrExportedLabels  = "EXPORTED_LABELS"          // compact JSON object
	attrExportedAnnots  = "EXPORTED_ANNOTATIONS"     // compact JSON object
	attrServicePorts    = "SERVICE_PORTS"            // marker only: compact JSON list of ports
	attrRecordKind      = "CLUSTERSET_INSTANCE_KIND" // "service" on markers, "heartbeat" on heartbeats
	attrHeartbeat       = "HEARTBEAT_TIMESTAMP"      // heartbeat only: ms since epoch
	attrHeartbeatLease  = "HEARTBEAT_LEASE_SECONDS"  // heartbeat only: Options.LeaseDuration
	attrHeartbeatHolder = "HEARTBEAT_HOLDER"         // heartbeat only: Options.Holder
	// attrRecordChanged is registry.Record.Changed in ms since the epoch,
	// on the marker only: an endpoint change then rewrites the marker and
	// the changed instances, never every instance of the record.
	attrRecordChanged = "RECORD_CHANGED"

	// attrOwnerClusterSetID replaces CLUSTERSET_ID on the instances the AWS
	// controller cannot parse: markers and endpoints without ports. It
	// reads a service with DiscoverInstances filtered on CLUSTERSET_ID and
	// logs an error for every instance it cannot parse; without that
	// attribute, such instances never reach it.
	attrOwnerClusterSetID = "OWNER_CLUSTERSET_ID"
)

const (
	kindService   = "service"
	kindHeartbeat = "heartbeat"

	// controllerName is the value of K8S_CONTROLLER on everything we write.
	controllerName = "clusterset-controller"

	// Cloud Map limits (Cloud Map API Reference, RegisterInstance):
	// custom attributes per instance, characters per value, characters of
	// every key and value of one instance together, characters per
	// InstanceId.
	maxAttributes      = 30
	maxAttributeValue  = 1024
	maxAttributesTotal = 5000
	maxInstanceID      = 64
)

// instance is one Cloud Map service instance as read or to be written.
type instance struct {
	ID    string
	Attrs map[string]string
}

// AttributeError reports a record that cannot be written without losing
// data: a value longer than Cloud Map accepts, or too many attributes. Values
// are never truncated.
type AttributeError struct {
	Key       registry.ServiceKey
	Attribute string
	Length    int
	Limit     int
}

// Attribute values of AttributeError that are not an attribute's name.
const (
	attrCount = "(count)" // Length is the number of attributes
	attrTotal = "(total)" // Length is the characters of every key and value
)

func (e *AttributeError) Error() string {
	what := "attribute " + e.Attribute + " is"
	switch e.Attribute {
	case attrCount:
		return fmt.Sprintf("cloudmap: service %s: an instance needs %d attributes, Cloud Map allows %d", e.Key, e.Length, e.Limit)
	case attrTotal:
		what = "the attributes of an instance are"
	}
	return fmt.Sprintf("cloudmap: service %s: %s %d characters long, Cloud Map allows %d (%s)", e.Key, what, e.Length, e.Limit, e.hint())
}

// hint says what in the export makes the attribute long.
func (e *AttributeError) hint() string {
	switch e.Attribute {
	case attrServicePorts:
		return "the Service has too many ports, or too long port names and appProtocols, for one Cloud Map attribute"
	case attrAppProtocol:
		return "shorten the port's appProtocol"
	default:
		return "shorten the ServiceExport's exportedLabels and exportedAnnotations"
	}
}

// instanceID returns the InstanceId of an endpoint port in the AWS
// controller's format: protocol lowercase, address with '.' and ':' replaced
// by '_', port. IPv4: tcp-10_10_86_76-80 (at most 26 characters); IPv6:
// tcp-fd00__1-80 (at most 50 characters), both under Cloud Map's 64.
func instanceID(protocol corev1.Protocol, addr string, port int32) string {
	a := strings.NewReplacer(".", "_", ":", "_").Replace(addr)
	return fmt.Sprintf("%s-%s-%d", strings.ToLower(string(protocol)), a, port)
}

// clusterSuffix is appended to an InstanceId that another cluster already
// holds in the same service (overlapping pod CIDRs): readers never rely on
// the InstanceId, only on attributes, so the AWS controller still reads it.
func clusterSuffix(clusterID string) string {
	h := sha256.Sum256([]byte(clusterID))
	return "-" + hex.EncodeToString(h[:3])
}

// markerID is the InstanceId of a cluster's service marker. It names the
// clusterset too: the same cluster ID may export the same service in two
// clustersets that share a Cloud Map namespace.
func markerID(clusterSetID, clusterID string) string {
	return boundedID("svc-", clusterSetID+"."+clusterID)
}

// heartbeatID is the InstanceId of a cluster's heartbeat.
func heartbeatID(clusterSetID, clusterID string) string {
	return boundedID("hb-", clusterSetID+"."+clusterID)
}

// boundedID returns prefix+name when that is a valid InstanceId, otherwise
// prefix + a hash of name.
func boundedID(prefix, name string) string {
	id := prefix + name
	if len(id) <= maxInstanceID && validIDChars(id) {
		return id
	}
	h := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(h[:16])
}

func validIDChars(s string) bool {
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("_/:.@-", c):
		default:
			return false
		}
	}
	return true
}

// normalizeAddr returns the canonical text of an IP address and its family.
func normalizeAddr(addr string) (string, discoveryv1.AddressType, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "", "", fmt.Errorf("invalid endpoint address %q: %w", addr, err)
	}
	if a.Is4() || a.Is4In6() {
		return a.Unmap().String(), discoveryv1.AddressTypeIPv4, nil
	}
	return a.String(), discoveryv1.AddressTypeIPv6, nil
}

// encodeRecord turns a record into the Cloud Map instances of this cluster:
// one per endpoint and port plus the marker. other maps InstanceIds held by
// other clusters in the same service to true; ours maps the endpoint port key
// (protocol/address/port) to the InstanceId we already hold, for stability.
func encodeRecord(rec *registry.Record, ours map[string]string, other map[string]bool) (map[string]instance, error) {
	key := rec.Key()
	svc, err := serviceAttrs(rec)
	if err != nil {
		return nil, err
	}
	out := map[string]instance{}

	portsJSON, err := json.Marshal(toWirePorts(rec.Spec.Ports))
	if err != nil {
		return nil, err
	}
	marker := copyAttrs(svc)
	marker[attrRecordKind] = kindService
	marker[attrReady] = "false"
	marker[attrServicePorts] = string(portsJSON)
	if !rec.Changed.IsZero() {
		marker[attrRecordChanged] = strconv.FormatInt(rec.Changed.UnixMilli(), 10)
	}
	hideFromAWSController(marker)
	mid := markerID(rec.ClusterSetID, rec.ClusterID)
	out[mid] = instance{ID: mid, Attrs: marker}

	byName := map[string]registry.Port{}
	for _, p := range rec.Spec.Ports {
		byName[p.Name] = p
	}
	// Deterministic order so that InstanceId collisions inside one record
	// always resolve the same way.
	eps := append([]registry.Endpoint(nil), rec.Endpoints...)
	sort.SliceStable(eps, func(i, j int) bool { return eps[i].Address < eps[j].Address })
	for _, ep := range eps {
		addr, family, err := normalizeAddr(ep.Address)
		if err != nil {
			return nil, fmt.Errorf("cloudmap: service %s: %w", key, err)
		}
		if len(ep.Ports) == 0 {
			// A headless service without ports still resolves by address:
			// one instance without AWS_INSTANCE_PORT (the AWS controller
			// skips it; it has no way to express such endpoints).
			a := copyAttrs(svc)
			setEndpointAttrs(a, &ep, addr, family)
			hideFromAWSController(a)
			id := "ip-" + strings.NewReplacer(".", "_", ":", "_").Replace(addr)
			out[id] = instance{ID: id, Attrs: a}
			continue
		}
		ports := append([]registry.EndpointPort(nil), ep.Ports...)
		sort.SliceStable(ports, func(i, j int) bool {
			if ports[i].Port != ports[j].Port {
				return ports[i].Port < ports[j].Port
			}
			return ports[i].Name < ports[j].Name
		})
		for _, epp := range ports {
			proto := epp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			a := copyAttrs(svc)
			setEndpointAttrs(a, &ep, addr, family)
			a[attrPort] = strconv.Itoa(int(epp.Port))
			a[attrEPPortName] = epp.Name
			a[attrEPProtocol] = string(proto)
			sp, ok := byName[epp.Name]
			if !ok {
				// An endpoint port without a service port of its name: keep
				// the standard attributes parseable for the AWS controller.
				sp = registry.Port{Name: epp.Name, Protocol: proto, Port: epp.Port, TargetPort: strconv.Itoa(int(epp.Port))}
			}
			sproto := sp.Protocol
			if sproto == "" {
				sproto = corev1.ProtocolTCP
			}
			a[attrSvcPort] = strconv.Itoa(int(sp.Port))
			a[attrSvcPortName] = sp.Name
			a[attrSvcProtocol] = string(sproto)
			a[attrSvcTarget] = sp.TargetPort
			if sp.AppProtocol != nil {
				a[attrAppProtocol] = *sp.AppProtocol
			}

			pk := portKey(proto, addr, epp.Port)
			id := ours[pk]
			if id == "" {
				id = instanceID(proto, addr, epp.Port)
				if other[id] {
					id += clusterSuffix(rec.ClusterID)
				}
			}
			if _, dup := out[id]; dup {
				// Two service ports share one endpoint port number: the
				// AWS format has no room for that, so the second one gets the
				// service port appended.
				id = fmt.Sprintf("%s-%d", id, sp.Port)
			}
			out[id] = instance{ID: id, Attrs: a}
		}
	}
	for _, inst := range out {
		if err := checkAttrs(key, inst.Attrs); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func setEndpointAttrs(a map[string]string, ep *registry.Endpoint, addr string, family discoveryv1.AddressType) {
	if family == discoveryv1.AddressTypeIPv4 {
		a[attrIPv4] = addr
	} else {
		a[attrIPv6] = addr
	}
	a[attrReady] = strconv.FormatBool(ep.Ready)
	a[attrServing] = strconv.FormatBool(ep.Serving)
	a[attrTerminating] = strconv.FormatBool(ep.Terminating)
	a[attrHostname] = ep.Hostname
	a[attrNodeName] = ep.NodeName
	if ep.Zone != "" {
		a[attrZone] = ep.Zone
	}
}

func portKey(proto corev1.Protocol, addr string, port int32) string {
	return fmt.Sprintf("%s/%s/%d", proto, addr, port)
}

// checkAttrs returns an AttributeError when Cloud Map would refuse attrs:
// too many, a value too long, or all of them too long together.
func checkAttrs(key registry.ServiceKey, attrs map[string]string) error {
	if len(attrs) > maxAttributes {
		return &AttributeError{Key: key, Attribute: attrCount, Length: len(attrs), Limit: maxAttributes}
	}
	names := make([]string, 0, len(attrs))
	total := 0
	for k, v := range attrs {
		names = append(names, k)
		total += len(k) + len(v)
	}
	sort.Strings(names)
	for _, k := range names {
		if n := len(attrs[k]); n > maxAttributeValue {
			return &AttributeError{Key: key, Attribute: k, Length: n, Limit: maxAttributeValue}
		}
	}
	if total > maxAttributesTotal {
		return &AttributeError{Key: key, Attribute: attrTotal, Length: total, Limit: maxAttributesTotal}
	}
	return nil
}

// serviceAttrs are the service-level attributes carried by every instance of
// a record (the AWS controller reads SERVICE_TYPE and the creation timestamp
// from each endpoint instance).
func serviceAttrs(rec *registry.Record) (map[string]string, error) {
	s := rec.Spec
	typ := s.Type
	if typ == "" {
		typ = registry.ClusterSetIP
	}
	a := map[string]string{
		attrClusterSetID:  rec.ClusterSetID,
		attrClusterID:     rec.ClusterID,
		attrController:    controllerName,
		attrSvcType:       string(typ),
		attrExportCreated: strconv.FormatInt(s.ExportCreated.UnixMilli(), 10),
	}
	if s.SessionAffinity != "" {
		a[attrSessionAffinity] = string(s.SessionAffinity)
	}
	if s.SessionAffinityConfig != nil {
		b, err := json.Marshal(s.SessionAffinityConfig)
		if err != nil {
			return nil, err
		}
		a[attrSessionConfig] = string(b)
	}
	if len(s.IPFamilies) > 0 {
		fams := make([]string, len(s.IPFamilies))
		for i, f := range s.IPFamilies {
			fams[i] = string(f)
		}
		a[attrIPFamilies] = strings.Join(fams, ",")
	}
	if s.InternalTrafficPolicy != nil {
		a[attrInternalPolicy] = string(*s.InternalTrafficPolicy)
	}
	if s.TrafficDistribution != nil {
		a[attrTrafficDist] = *s.TrafficDistribution
	}
	if s.ExportedLabels != nil {
		b, err := asciiJSON(s.ExportedLabels)
		if err != nil {
			return nil, err
		}
		a[attrExportedLabels] = b
	}
	if s.ExportedAnnotations != nil {
		b, err := asciiJSON(s.ExportedAnnotations)
		if err != nil {
			return nil, err
		}
		a[attrExportedAnnots] = b
	}
	return a, nil
}

// asciiJSON is v as compact JSON in printable ASCII: every other character,
// which can only be in a string, is written as a \u escape (a surrogate
// pair above U+FFFF), which any JSON decoder reads back. Cloud Map takes
// attribute values of printable ASCII only (API reference, RegisterInstance
// Attributes), and annotation values may be any UTF-8.
func asciiJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, r := range string(b) {
		switch {
		case r >= ' ' && r < 0x7f:
			out.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, "\\u%04x\\u%04x", r1, r2)
		default:
			fmt.Fprintf(&out, "\\u%04x", r)
		}
	}
	return out.String(), nil
}

// recordChanged returns a marker's RECORD_CHANGED; zero when it is absent
// or garbage (unknown, which only costs a lag sample).
func recordChanged(marker map[string]string) time.Time {
	if ms, err := strconv.ParseInt(marker[attrRecordChanged], 10, 64); err == nil && ms > 0 {
		return time.UnixMilli(ms).UTC()
	}
	return time.Time{}
}

// hideFromAWSController moves an instance's CLUSTERSET_ID to
// OWNER_CLUSTERSET_ID, so that the AWS controller's filtered reads skip it.
func hideFromAWSController(a map[string]string) {
	a[attrOwnerClusterSetID] = a[attrClusterSetID]
	delete(a, attrClusterSetID)
}

// clusterSetOf returns the clusterset an instance belongs to: its
// CLUSTERSET_ID, else its OWNER_CLUSTERSET_ID, else "".
func clusterSetOf(a map[string]string) string {
	if v, ok := a[attrClusterSetID]; ok {
		return v
	}
	return a[attrOwnerClusterSetID]
}

func copyAttrs(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+16)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// wirePort is a service port in the marker's SERVICE_PORTS attribute.
type wirePort struct {
	Name        string  `json:"n,omitempty"`
	Protocol    string  `json:"p,omitempty"`
	AppProtocol *string `json:"a,omitempty"`
	Port        int32   `json:"o"`
	TargetPort  string  `json:"t,omitempty"`
}

func toWirePorts(ps []registry.Port) []wirePort {
	out := make([]wirePort, 0, len(ps))
	for _, p := range ps {
		out = append(out, wirePort{Name: p.Name, Protocol: string(p.Protocol), AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: p.TargetPort})
	}
	return out
}
