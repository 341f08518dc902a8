package hub

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// scheme knows the hub API only: the backend talks to nothing else.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := hubv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// recordClient reads and writes ClusterSetRecords, like a generated typed
// client. Every request it makes ends within timeout: a hub that accepts
// connections but never answers (stopped, overloaded, or cut off by a
// network that drops packets) fails a Publish or a heartbeat instead of
// holding it, and the reconcile that called it, forever.
type recordClient struct {
	rest    rest.Interface
	timeout time.Duration
}

func newRecordClient(cfg *rest.Config, timeout time.Duration) (*recordClient, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &hubv1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = runtime.ContentTypeJSON
	cfg.AcceptContentTypes = runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &recordClient{rest: rc, timeout: timeout}, nil
}

func (c *recordClient) get(ctx context.Context, namespace, name string) (*hubv1alpha1.ClusterSetRecord, error) {
	out := &hubv1alpha1.ClusterSetRecord{}
	err := c.rest.Get().Namespace(namespace).Resource(hubv1alpha1.Resource).Name(name).Timeout(c.timeout).Do(ctx).Into(out)
	return out, err
}

func (c *recordClient) create(ctx context.Context, obj *hubv1alpha1.ClusterSetRecord) error {
	return c.rest.Post().Namespace(obj.Namespace).Resource(hubv1alpha1.Resource).Body(obj).Timeout(c.timeout).Do(ctx).Error()
}

func (c *recordClient) update(ctx context.Context, obj *hubv1alpha1.ClusterSetRecord) error {
	return c.rest.Put().Namespace(obj.Namespace).Resource(hubv1alpha1.Resource).Name(obj.Name).Body(obj).Timeout(c.timeout).Do(ctx).Error()
}

func (c *recordClient) delete(ctx context.Context, namespace, name string) error {
	return c.rest.Delete().Namespace(namespace).Resource(hubv1alpha1.Resource).Name(name).Timeout(c.timeout).Do(ctx).Error()
}

// list lists in namespace, or in all namespaces when it is empty.
func (c *recordClient) list(ctx context.Context, namespace, selector string) (*hubv1alpha1.ClusterSetRecordList, error) {
	out := &hubv1alpha1.ClusterSetRecordList{}
	err := c.rest.Get().Namespace(namespace).Resource(hubv1alpha1.Resource).
		VersionedParams(&metav1.ListOptions{LabelSelector: selector}, metav1.ParameterCodec).
		Timeout(c.timeout).Do(ctx).Into(out)
	return out, err
}
