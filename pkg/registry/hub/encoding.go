package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

// The wire format of a record in the hub. It is versioned and independent of
// the Go types of package registry, so that controllers of different versions
// in one clusterset read each other's records.
//
// A record is a head ClusterSetRecord plus, for records of more than
// ChunkSize endpoints, chunk ClusterSetRecords:
//
//	spec.record    head only: wireHead (version, digest, chunk count, spec)
//	spec.endpoints head and chunks: wireChunk (digest, index, endpoints)
//
// The digest is a hash of the whole encoded record and names its chunks, so
// that two versions of a record never share a chunk object.
const wireVersion = 1

type wireHead struct {
	Version int      `json:"v"`
	Digest  string   `json:"digest"`
	Chunks  int      `json:"chunks"`
	Spec    wireSpec `json:"spec"`
	// Changed is registry.Record.Changed (RFC 3339, nanoseconds). The
	// digest leaves it out: it is not content, so a republish with the same
	// content matches the head and writes nothing. Readers of an older
	// version ignore the field.
	Changed time.Time `json:"changed,omitzero"`
}

type wireSpec struct {
	Type                  string                        `json:"type"`
	Ports                 []wireServicePort             `json:"ports,omitempty"`
	SessionAffinity       string                        `json:"sessionAffinity,omitempty"`
	SessionAffinityConfig *corev1.SessionAffinityConfig `json:"sessionAffinityConfig,omitempty"`
	IPFamilies            []corev1.IPFamily             `json:"ipFamilies,omitempty"`
	InternalTrafficPolicy *string                       `json:"internalTrafficPolicy,omitempty"`
	TrafficDistribution   *string                       `json:"trafficDistribution,omitempty"`
	ExportedLabels        map[string]string             `json:"exportedLabels,omitempty"`
	ExportedAnnotations   map[string]string             `json:"exportedAnnotations,omitempty"`
	// ExportCreated in RFC 3339 with nanoseconds.
	ExportCreated time.Time `json:"exportCreated"`
}

type wireServicePort struct {
	Name        string  `json:"name,omitempty"`
	Protocol    string  `json:"protocol,omitempty"`
	AppProtocol *string `json:"appProtocol,omitempty"`
	Port        int32   `json:"port"`
	TargetPort  string  `json:"targetPort,omitempty"`
}

// wireChunk holds up to ChunkSize endpoints. Endpoints of a service usually
// share one set of ports, so the sets are stored once per chunk and each
// endpoint refers to its set by index: about 40 bytes per IPv4 endpoint
// without hostname, node or zone.
type wireChunk struct {
	Digest    string         `json:"digest"`
	Index     int            `json:"index"`
	PortSets  [][]wirePort   `json:"portSets,omitempty"`
	Endpoints []wireEndpoint `json:"endpoints,omitempty"`
}

type wirePort struct {
	Name     string `json:"n,omitempty"`
	Protocol string `json:"p,omitempty"` // empty means TCP
	Port     int32  `json:"port"`
}

// Condition bits of wireEndpoint.Conditions.
const (
	condReady       = 1 << 0
	condServing     = 1 << 1
	condTerminating = 1 << 2
)

type wireEndpoint struct {
	Address string `json:"a"`
	// Type is empty for IPv4, else the discovery AddressType.
	Type       string `json:"t,omitempty"`
	PortSet    int    `json:"ps"`
	Conditions uint8  `json:"c,omitempty"`
	Hostname   string `json:"h,omitempty"`
	NodeName   string `json:"n,omitempty"`
	Zone       string `json:"z,omitempty"`
}

// encoded is a record ready to be written: the head's JSON and the JSON of
// every chunk (chunk 0 goes into the head).
type encoded struct {
	digest string
	head   []byte
	chunks [][]byte
}

// encode turns rec into its wire form with at most chunkSize endpoints per
// chunk. A record without endpoints still has chunk 0, empty.
func encode(rec *registry.Record, chunkSize int) (*encoded, error) {
	spec := toWireSpec(&rec.Spec)
	var chunks []wireChunk
	for start := 0; start == 0 || start < len(rec.Endpoints); start += chunkSize {
		end := min(start+chunkSize, len(rec.Endpoints))
		chunks = append(chunks, toWireChunk(rec.Endpoints[start:end], len(chunks)))
	}
	// The digest covers the spec and every chunk, before it is filled in.
	h := sha256.New()
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	h.Write(specJSON)
	for _, c := range chunks {
		raw, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		h.Write(raw)
	}
	digest := hex.EncodeToString(h.Sum(nil))[:12]

	out := &encoded{digest: digest}
	out.head, err = json.Marshal(wireHead{Version: wireVersion, Digest: digest, Chunks: len(chunks), Spec: spec, Changed: rec.Changed.UTC()})
	if err != nil {
		return nil, err
	}
	for _, c := range chunks {
		c.Digest = digest
		raw, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		out.chunks = append(out.chunks, raw)
	}
	return out, nil
}

func toWireSpec(s *registry.ServiceSpec) wireSpec {
	w := wireSpec{
		Type:                  string(s.Type),
		SessionAffinity:       string(s.SessionAffinity),
		IPFamilies:            s.IPFamilies,
		TrafficDistribution:   s.TrafficDistribution,
		ExportedLabels:        s.ExportedLabels,
		ExportedAnnotations:   s.ExportedAnnotations,
		ExportCreated:         s.ExportCreated.UTC(),
		SessionAffinityConfig: s.SessionAffinityConfig,
	}
	if s.InternalTrafficPolicy != nil {
		p := string(*s.InternalTrafficPolicy)
		w.InternalTrafficPolicy = &p
	}
	for _, p := range s.Ports {
		w.Ports = append(w.Ports, wireServicePort{Name: p.Name, Protocol: string(p.Protocol), AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: p.TargetPort})
	}
	return w
}

func toWireChunk(eps []registry.Endpoint, index int) wireChunk {
	c := wireChunk{Index: index}
	sets := map[string]int{}
	for _, ep := range eps {
		ports := make([]wirePort, 0, len(ep.Ports))
		for _, p := range ep.Ports {
			proto := string(p.Protocol)
			if p.Protocol == corev1.ProtocolTCP {
				proto = ""
			}
			ports = append(ports, wirePort{Name: p.Name, Protocol: proto, Port: p.Port})
		}
		setKey := fmt.Sprint(ports)
		set, ok := sets[setKey]
		if !ok {
			set = len(c.PortSets)
			sets[setKey] = set
			c.PortSets = append(c.PortSets, ports)
		}
		w := wireEndpoint{Address: ep.Address, PortSet: set, Hostname: ep.Hostname, NodeName: ep.NodeName, Zone: ep.Zone}
		if ep.AddressType != discoveryv1.AddressTypeIPv4 {
			w.Type = string(ep.AddressType)
		}
		if ep.Ready {
			w.Conditions |= condReady
		}
		if ep.Serving {
			w.Conditions |= condServing
		}
		if ep.Terminating {
			w.Conditions |= condTerminating
		}
		c.Endpoints = append(c.Endpoints, w)
	}
	return c
}

func decodeHead(raw string) (*wireHead, error) {
	var h wireHead
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		return nil, fmt.Errorf("decoding record head: %w", err)
	}
	if h.Version != wireVersion {
		return nil, fmt.Errorf("record head has wire version %d, this reader knows %d", h.Version, wireVersion)
	}
	if h.Chunks < 1 {
		return nil, fmt.Errorf("record head has %d chunks", h.Chunks)
	}
	return &h, nil
}

func decodeChunk(raw string) (*wireChunk, error) {
	var c wireChunk
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return nil, fmt.Errorf("decoding record chunk: %w", err)
	}
	return &c, nil
}

func fromWireSpec(w *wireSpec) registry.ServiceSpec {
	s := registry.ServiceSpec{
		Type:                  registry.ServiceType(w.Type),
		SessionAffinity:       corev1.ServiceAffinity(w.SessionAffinity),
		SessionAffinityConfig: w.SessionAffinityConfig,
		IPFamilies:            w.IPFamilies,
		TrafficDistribution:   w.TrafficDistribution,
		ExportedLabels:        w.ExportedLabels,
		ExportedAnnotations:   w.ExportedAnnotations,
		ExportCreated:         w.ExportCreated,
	}
	if w.InternalTrafficPolicy != nil {
		p := corev1.ServiceInternalTrafficPolicy(*w.InternalTrafficPolicy)
		s.InternalTrafficPolicy = &p
	}
	for _, p := range w.Ports {
		s.Ports = append(s.Ports, registry.Port{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: p.TargetPort})
	}
	return s
}

// appendEndpoints appends the endpoints of chunk c to dst. A chunk whose
// structure is broken (a port set that does not exist) is an error; an
// endpoint that registry.Endpoint.Validate rejects is left out and reported
// to report with dropped true, so that one bad endpoint never hides the
// others. A hostname or node name that Sanitize clears is reported with
// dropped false: the endpoint is kept.
func appendEndpoints(dst []registry.Endpoint, c *wireChunk, report func(err error, dropped bool)) ([]registry.Endpoint, error) {
	for _, w := range c.Endpoints {
		if w.PortSet < 0 || (w.PortSet >= len(c.PortSets) && w.PortSet != 0) {
			return nil, fmt.Errorf("endpoint %s refers to port set %d of %d", w.Address, w.PortSet, len(c.PortSets))
		}
		ep := registry.Endpoint{
			Address:     w.Address,
			AddressType: discoveryv1.AddressTypeIPv4,
			Ready:       w.Conditions&condReady != 0,
			Serving:     w.Conditions&condServing != 0,
			Terminating: w.Conditions&condTerminating != 0,
			Hostname:    w.Hostname,
			NodeName:    w.NodeName,
			Zone:        w.Zone,
		}
		if w.Type != "" {
			ep.AddressType = discoveryv1.AddressType(w.Type)
		}
		if w.PortSet < len(c.PortSets) {
			for _, p := range c.PortSets[w.PortSet] {
				proto := corev1.Protocol(p.Protocol)
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				ep.Ports = append(ep.Ports, registry.EndpointPort{Name: p.Name, Protocol: proto, Port: p.Port})
			}
		}
		if err := ep.Sanitize(); err != nil {
			report(err, false)
		}
		if err := ep.Validate(); err != nil {
			report(err, true)
			continue
		}
		dst = append(dst, ep)
	}
	return dst, nil
}
