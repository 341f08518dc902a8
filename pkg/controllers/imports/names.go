package imports

import (
	"strconv"

	"github.com/clusterset/clusterset/pkg/names"
)

// DerivedServiceName is the name of the Service that holds an import's local
// VIP. It depends only on the service name, so every cluster and every
// restart finds the same one, and it fits in 63 characters whatever the name
// (I2): "derived-" and 16 hex digits of the name's SHA-256.
func DerivedServiceName(service string) string {
	return "derived-" + names.ShortHash(service, 16)
}

// sliceName names the n-th EndpointSlice of one source cluster, address type
// and port set of an import. The group is hashed so that cluster IDs of any
// length give a valid name.
func sliceName(derived, group string, n int) string {
	return derived + "-" + names.ShortHash(group, 10) + "-" + strconv.Itoa(n)
}
