// Package scheme holds the one runtime.Scheme that clusterset's binaries and
// tests use: Kubernetes' built-in types, both MCS API versions and
// ClusterProperty.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
)

// Scheme knows every type clusterset reads or writes.
var Scheme = runtime.NewScheme()

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, mcsv1alpha1.AddToScheme, mcsv1beta1.AddToScheme, aboutv1alpha1.AddToScheme,
	} {
		if err := add(Scheme); err != nil {
			panic(err)
		}
	}
}
