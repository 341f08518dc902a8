package cloudmap

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
)

// refreshNamespaces lists the account's namespaces into the cache.
func (r *Registry) refreshNamespaces(ctx context.Context) ([]nsInfo, error) {
	list, err := r.api.listNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]nsInfo{}
	var uniq []nsInfo
	for _, n := range list {
		if _, dup := byName[n.Name]; dup {
			continue // moto allows duplicate names; DiscoverInstances uses the first
		}
		byName[n.Name] = n
		uniq = append(uniq, n)
	}
	r.mu.Lock()
	r.namespaces = byName
	r.mu.Unlock()
	return uniq, nil
}

// namespace finds the Cloud Map namespace of name, creating an HTTP
// namespace when it is missing and create is set. An existing namespace of
// any type (HTTP, private DNS) is used as it is.
func (r *Registry) namespace(ctx context.Context, name string, create bool) (nsInfo, bool, error) {
	r.mu.Lock()
	n, ok := r.namespaces[name]
	r.mu.Unlock()
	if ok {
		return n, true, nil
	}
	if _, err := r.refreshNamespaces(ctx); err != nil {
		return nsInfo{}, false, err
	}
	r.mu.Lock()
	n, ok = r.namespaces[name]
	r.mu.Unlock()
	if ok || !create {
		return n, ok, nil
	}

	r.createMu.Lock()
	defer r.createMu.Unlock()
	out, err := r.api.c.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{
		Name:             aws.String(name),
		Description:      aws.String(description),
		CreatorRequestId: aws.String(requestID("ns", r.opts.ClusterID, name)),
		Tags:             []sdtypes.Tag{{Key: aws.String(createdByTag), Value: aws.String(controllerName)}},
	})
	var created string
	switch {
	case isCode(err, "NamespaceAlreadyExists", "DuplicateRequest"):
	case err != nil:
		return nsInfo{}, false, fmt.Errorf("cloudmap: create namespace %s: %w", name, err)
	default:
		targets, err := r.api.waitOperation(ctx, aws.ToString(out.OperationId))
		if err != nil {
			return nsInfo{}, false, fmt.Errorf("cloudmap: create namespace %s: %w", name, err)
		}
		created = targets[string(sdtypes.OperationTargetTypeNamespace)]
		r.log.Info("created Cloud Map namespace", "namespace", name, "id", created)
	}
	if _, err := r.refreshNamespaces(ctx); err != nil {
		return nsInfo{}, false, err
	}
	r.mu.Lock()
	n, ok = r.namespaces[name]
	r.mu.Unlock()
	if !ok {
		return nsInfo{}, false, fmt.Errorf("cloudmap: namespace %s not listed after creation", name)
	}
	if created != "" && created != n.ID {
		// Another cluster created the same name at the same moment (only
		// moto allows that): keep the first one, drop ours while it is empty.
		_, _ = r.api.c.DeleteNamespace(ctx, &sd.DeleteNamespaceInput{Id: aws.String(created)})
	}
	return n, true, nil
}

// namespaceOf returns the namespace ID of a service (cached for good).
func (r *Registry) namespaceOf(ctx context.Context, serviceID string) (string, error) {
	r.mu.Lock()
	ns, ok := r.svcNS[serviceID]
	r.mu.Unlock()
	if ok {
		return ns, nil
	}
	out, err := r.api.c.GetService(ctx, &sd.GetServiceInput{Id: aws.String(serviceID)})
	if err != nil {
		return "", err
	}
	ns = aws.ToString(out.Service.NamespaceId)
	r.mu.Lock()
	r.svcNS[serviceID] = ns
	r.mu.Unlock()
	return ns, nil
}

// findService lists the services of ns and returns the first named name.
func (r *Registry) findService(ctx context.Context, ns nsInfo, name string) (svcInfo, bool, error) {
	list, err := r.api.listServices(ctx, ns.ID)
	if err != nil {
		return svcInfo{}, false, err
	}
	for _, s := range list {
		if s.Name != name {
			continue
		}
		nsID, err := r.namespaceOf(ctx, s.ID)
		if err != nil {
			if isCode(err, "ServiceNotFound") {
				continue
			}
			return svcInfo{}, false, err
		}
		if nsID != ns.ID {
			continue
		}
		s.NamespaceID = nsID
		r.mu.Lock()
		r.services[[2]string{ns.ID, name}] = s
		r.mu.Unlock()
		return s, true, nil
	}
	return svcInfo{}, false, nil
}

// service finds (and with create, creates) the Cloud Map service name in ns.
// Services are created without DNS records: discovery is through the API
// (DiscoverInstances), and instances without an IP (markers) stay valid.
func (r *Registry) service(ctx context.Context, ns nsInfo, name string, create bool) (svcInfo, bool, error) {
	r.mu.Lock()
	s, ok := r.services[[2]string{ns.ID, name}]
	r.mu.Unlock()
	if ok {
		return s, true, nil
	}
	s, ok, err := r.findService(ctx, ns, name)
	if err != nil || ok || !create {
		return s, ok, err
	}

	r.createMu.Lock()
	defer r.createMu.Unlock()
	out, err := r.api.c.CreateService(ctx, &sd.CreateServiceInput{
		Name:             aws.String(name),
		NamespaceId:      aws.String(ns.ID),
		Description:      aws.String(description),
		CreatorRequestId: aws.String(requestID("svc", r.opts.ClusterID, ns.ID+"/"+name)),
		Tags:             []sdtypes.Tag{{Key: aws.String(createdByTag), Value: aws.String(controllerName)}},
	})
	var created string
	switch {
	case isCode(err, "ServiceAlreadyExists", "DuplicateRequest"):
	case err != nil:
		return svcInfo{}, false, fmt.Errorf("cloudmap: create service %s/%s: %w", ns.Name, name, err)
	default:
		created = aws.ToString(out.Service.Id)
		r.mu.Lock()
		r.svcNS[created] = ns.ID
		r.mu.Unlock()
		r.log.Info("created Cloud Map service", "namespace", ns.Name, "service", name, "id", created)
	}
	s, ok, err = r.findService(ctx, ns, name)
	if err != nil {
		return svcInfo{}, false, err
	}
	if !ok {
		return svcInfo{}, false, fmt.Errorf("cloudmap: service %s/%s not listed after creation", ns.Name, name)
	}
	if created != "" && created != s.ID {
		// Concurrent creation of the same name (moto only): keep the first.
		_, _ = r.api.c.DeleteService(ctx, &sd.DeleteServiceInput{Id: aws.String(created)})
	}
	return s, true, nil
}

func (r *Registry) forgetNamespace(name string) {
	r.mu.Lock()
	delete(r.namespaces, name)
	r.mu.Unlock()
}

func (r *Registry) forgetService(ns nsInfo, name string) {
	r.mu.Lock()
	delete(r.services, [2]string{ns.ID, name})
	r.mu.Unlock()
}

// requestID is a CreatorRequestId: unique per attempt, so that a retry
// after a deletion is not mistaken for a duplicate request.
func requestID(kind, cluster, name string) string {
	id := fmt.Sprintf("%s-%s-%d", kind, boundedID("", cluster+"/"+name), time.Now().UnixNano())
	if len(id) > 64 {
		id = id[len(id)-64:]
	}
	return id
}
