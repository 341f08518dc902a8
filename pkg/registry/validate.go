package registry

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate reports why ep cannot be imported into an EndpointSlice, or nil.
// Records come from other clusters (and, with Cloud Map, from other writers
// and people), so readers check each endpoint against what the API server
// accepts in a discovery.k8s.io/v1 EndpointSlice (validateEndpoints and
// ValidateEndpointIP in Kubernetes' pkg/apis/discovery/validation and
// pkg/apis/core/validation): an address of its address type (IPv4 or IPv6)
// in canonical form and outside the unspecified, loopback, link-local and
// link-local multicast ranges; ports 1-65535 with protocol TCP, UDP or SCTP
// and a name that is empty or a DNS-1123 label; a hostname that is empty or
// a DNS-1123 label; a node name that is empty or a DNS-1123 subdomain. An
// invalid endpoint is dropped, never the rest of its record: one bad
// endpoint would otherwise fail the write of its whole EndpointSlice.
func (ep Endpoint) Validate() error {
	addr, err := netip.ParseAddr(ep.Address)
	if err != nil || addr.Zone() != "" {
		return fmt.Errorf("address %q is not an IP address", ep.Address)
	}
	switch {
	case ep.AddressType == discoveryv1.AddressTypeIPv4 && !addr.Is4():
		return fmt.Errorf("address %s is not IPv4", ep.Address)
	case ep.AddressType == discoveryv1.AddressTypeIPv6 && (!addr.Is6() || addr.Is4In6()):
		return fmt.Errorf("address %s is not IPv6", ep.Address)
	case ep.AddressType != discoveryv1.AddressTypeIPv4 && ep.AddressType != discoveryv1.AddressTypeIPv6:
		return fmt.Errorf("address type %q is neither IPv4 nor IPv6", ep.AddressType)
	case addr.String() != ep.Address:
		return fmt.Errorf("address %s is not in canonical form (%s)", ep.Address, addr)
	case addr.IsUnspecified():
		return fmt.Errorf("address %s is unspecified", ep.Address)
	case addr.IsLoopback():
		return fmt.Errorf("address %s is in the loopback range", ep.Address)
	case addr.IsLinkLocalUnicast():
		return fmt.Errorf("address %s is in the link-local range", ep.Address)
	case addr.IsLinkLocalMulticast():
		return fmt.Errorf("address %s is in the link-local multicast range", ep.Address)
	}
	for _, p := range ep.Ports {
		if err := validatePort(p.Name, p.Protocol, p.Port); err != nil {
			return fmt.Errorf("endpoint %s: %w", ep.Address, err)
		}
	}
	if ep.Hostname != "" {
		if errs := validation.IsDNS1123Label(ep.Hostname); len(errs) > 0 {
			return fmt.Errorf("endpoint %s: hostname %q: %s", ep.Address, ep.Hostname, errs[0])
		}
	}
	if ep.NodeName != "" {
		if errs := validation.IsDNS1123Subdomain(ep.NodeName); len(errs) > 0 {
			return fmt.Errorf("endpoint %s: node name %q: %s", ep.Address, ep.NodeName, errs[0])
		}
	}
	return nil
}

// Sanitize repairs what it can in ep without losing anything a user needs,
// before Validate: it writes the address in canonical form (the
// EndpointSlice API rejects "fd00:0::1" for "fd00::1"; both are one
// address), clears the hostname when it is not a DNS-1123 label and the node
// name when it is not a DNS-1123 subdomain, and returns why it cleared a
// name, or nil. The endpoint itself stays usable: only its per-pod DNS name
// or its node is lost.
func (ep *Endpoint) Sanitize() error {
	if addr, err := netip.ParseAddr(ep.Address); err == nil && addr.Zone() == "" && !addr.Is4In6() {
		ep.Address = addr.String()
	}
	var errs []error
	if ep.Hostname != "" {
		if msgs := validation.IsDNS1123Label(ep.Hostname); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("endpoint %s: hostname %q left out: %s", ep.Address, ep.Hostname, msgs[0]))
			ep.Hostname = ""
		}
	}
	if ep.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(ep.NodeName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("endpoint %s: node name %q left out: %s", ep.Address, ep.NodeName, msgs[0]))
			ep.NodeName = ""
		}
	}
	return errors.Join(errs...)
}

// ValidatePorts reports why the service ports of s cannot be ports of a
// Service (ports 1-65535, protocol TCP, UDP or SCTP, a name that is empty or
// a DNS-1123 label), or nil. A record whose ports are invalid is not
// imported.
func (s *ServiceSpec) ValidatePorts() error {
	for _, p := range s.Ports {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Validate reports why p cannot be a port of a Service, or nil (see
// ServiceSpec.ValidatePorts).
func (p Port) Validate() error {
	if err := validatePort(p.Name, p.Protocol, p.Port); err != nil {
		return fmt.Errorf("service %w", err)
	}
	return nil
}

func validatePort(name string, protocol corev1.Protocol, port int32) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d is out of range 1-65535", port)
	}
	switch protocol {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return fmt.Errorf("port %d: protocol %q is not TCP, UDP or SCTP", port, protocol)
	}
	if name != "" {
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			return fmt.Errorf("port %d: name %q: %s", port, name, errs[0])
		}
	}
	return nil
}
