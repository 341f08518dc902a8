package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// findService lists the services of ns, remembers the listing (listed),
// and returns the first service of the listing named name.
func (r *Registry) findService(ctx context.Context, ns nsInfo, name string) (svcInfo, bool, error) {
	list, err := r.api.listServices(ctx, ns.ID)
	if err != nil {
		return svcInfo{}, false, err
	}
	byName := map[string][]svcInfo{}
	for _, s := range list {
		byName[s.Name] = append(byName[s.Name], s)
	}
	r.mu.Lock()
	r.listed[ns.ID] = byName
	r.mu.Unlock()
	s, ok := r.pickService(ns, name, byName[name])
	return s, ok, nil
}

// pickService returns the first of candidates (services named name, in the
// order of a listing of ns) and caches it. Duplicates are moto's:
// DiscoverInstances reads the first. A listing of one namespace says where
// its services are, so no GetService is needed.
func (r *Registry) pickService(ns nsInfo, name string, candidates []svcInfo) (svcInfo, bool) {
	if len(candidates) == 0 {
		return svcInfo{}, false
	}
	s := candidates[0]
	s.NamespaceID = ns.ID
	r.remember(ns, name, s, false)
	return s, true
}

// remember caches s as the service name of ns, and with listed also puts it
// in the kept listing of ns (a service this process just created).
func (r *Registry) remember(ns nsInfo, name string, s svcInfo, listed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.svcNS[s.ID] = ns.ID
	r.services[[2]string{ns.ID, name}] = s
	if l := r.listed[ns.ID]; listed && l != nil {
		l[name] = []svcInfo{s}
	}
}

// service finds (and with create, creates) the Cloud Map service name in ns.
// Services are created without DNS records: discovery is through the API
// (DiscoverInstances), and instances without an IP (markers) stay valid.
//
// A namespace's services are listed once (ListServices, paged), not once
// per service: a name the listing has is picked from it, and one it does
// not have is created at once. A service another cluster created since the
// listing makes Cloud Map answer ServiceAlreadyExists, which names it (the
// namespace is listed again when it does not). moto refuses a second
// service of a name too with hack/moto's patch, as
// TestMotoRefusesDuplicateServiceNames checks. Before, each new service
// listed the whole namespace twice, so a burst of N services in one
// namespace cost O(N²) listed services (docs/benchmarks.md, bursts).
func (r *Registry) service(ctx context.Context, ns nsInfo, name string, create bool) (svcInfo, bool, error) {
	r.mu.Lock()
	s, ok := r.services[[2]string{ns.ID, name}]
	listing, listed := r.listed[ns.ID]
	candidates := listing[name]
	r.mu.Unlock()
	if ok {
		return s, true, nil
	}
	if !create {
		// Withdraw and repair, rare: a fresh listing, not one another
		// cluster may have outdated by deleting and recreating the name.
		return r.findService(ctx, ns, name)
	}
	if s, ok := r.pickService(ns, name, candidates); ok {
		return s, true, nil
	}
	if !listed {
		s, ok, err := r.findService(ctx, ns, name)
		if err != nil || ok {
			return s, ok, err
		}
	}

	defer r.lockCreate(ns.ID, name)()
	r.mu.Lock()
	s, ok = r.services[[2]string{ns.ID, name}]
	r.mu.Unlock()
	if ok {
		return s, true, nil // created by another caller while this one waited
	}
	out, err := r.api.c.CreateService(ctx, &sd.CreateServiceInput{
		Name:             aws.String(name),
		NamespaceId:      aws.String(ns.ID),
		Description:      aws.String(description),
		CreatorRequestId: aws.String(requestID("svc", r.opts.ClusterID, ns.ID+"/"+name)),
		Tags:             []sdtypes.Tag{{Key: aws.String(createdByTag), Value: aws.String(controllerName)}},
	})
	var exists *sdtypes.ServiceAlreadyExists
	switch {
	case errors.As(err, &exists) && aws.ToString(exists.ServiceId) != "" && aws.ToString(exists.ServiceArn) != "":
		// Created since the listing, by another cluster: Cloud Map says
		// which service it is.
		s := svcInfo{ID: aws.ToString(exists.ServiceId), ARN: aws.ToString(exists.ServiceArn), Name: name, NamespaceID: ns.ID}
		r.remember(ns, name, s, false)
		return s, true, nil
	case isCode(err, "ServiceAlreadyExists", "DuplicateRequest"):
		// Created since the listing, by another cluster or an earlier
		// attempt: list again to learn its ID and ARN.
		s, ok, err := r.findService(ctx, ns, name)
		if err != nil {
			return svcInfo{}, false, err
		}
		if !ok {
			return svcInfo{}, false, fmt.Errorf("cloudmap: service %s/%s exists but is not listed", ns.Name, name)
		}
		return s, true, nil
	case err != nil:
		return svcInfo{}, false, fmt.Errorf("cloudmap: create service %s/%s: %w", ns.Name, name, err)
	}
	created := svcInfo{ID: aws.ToString(out.Service.Id), ARN: aws.ToString(out.Service.Arn), Name: name, NamespaceID: ns.ID}
	r.log.Info("created Cloud Map service", "namespace", ns.Name, "service", name, "id", created.ID)
	r.remember(ns, name, created, true)
	created.Created = true
	return created, true, nil
}

// lockCreate serialises this process's creations of one service name in a
// namespace; creations of different names run in parallel.
func (r *Registry) lockCreate(namespaceID, name string) func() {
	r.mu.Lock()
	l := r.createLocks[[2]string{namespaceID, name}]
	if l == nil {
		l = &sync.Mutex{}
		r.createLocks[[2]string{namespaceID, name}] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (r *Registry) forgetNamespace(name string) {
	r.mu.Lock()
	delete(r.namespaces, name)
	r.mu.Unlock()
}

func (r *Registry) forgetService(ns nsInfo, name string) {
	r.mu.Lock()
	delete(r.services, [2]string{ns.ID, name})
	if l := r.listed[ns.ID]; l != nil {
		delete(l, name)
	}
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
