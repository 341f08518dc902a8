package registry

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate reports why ep cannot be imported into an EndpointSlice, or nil.
// Records come from other clusters (and, with Cloud Map, from other writers
// and people), so readers check each endpoint against what the API server
// accepts in a discovery.k8s.io/v1 EndpointSlice: an address of its address
// type (IPv4 or IPv6), ports 1-65535 with protocol TCP, UDP or
// SCTP and a name that is empty or a DNS-1123 label, and a hostname that is
// empty or a DNS-1123 label. An invalid endpoint is dropped, never the rest
// of its record.
func (ep Endpoint) Validate() error {
	addr, err := netip.ParseAddr(ep.Address)
	if err != nil || addr.Zone() != "" {
		return fmt.Errorf("address %q is not an IP address", ep.Address)
	}
	switch {
	case ep.AddressType == discoveryv1.AddressTypeIPv4 && !addr.Is4():
		return fmt.Errorf("address %s is not IPv4", ep.Address)
	case ep.AddressType == discoveryv1.AddressTypeIPv6 && !addr.Is6():
		return fmt.Errorf("address %s is not IPv6", ep.Address)
	case ep.AddressType != discoveryv1.AddressTypeIPv4 && ep.AddressType != discoveryv1.AddressTypeIPv6:
		return fmt.Errorf("address type %q is neither IPv4 nor IPv6", ep.AddressType)
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
	return nil
}

// DropInvalidHostname clears ep's hostname when it is not a DNS-1123 label
// (what an EndpointSlice accepts) and returns why, or nil when it was valid.
// The endpoint itself stays usable: only its per-pod DNS name is lost.
func (ep *Endpoint) DropInvalidHostname() error {
	if ep.Hostname == "" {
		return nil
	}
	if errs := validation.IsDNS1123Label(ep.Hostname); len(errs) > 0 {
		h := ep.Hostname
		ep.Hostname = ""
		return fmt.Errorf("endpoint %s: hostname %q left out: %s", ep.Address, h, errs[0])
	}
	return nil
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
