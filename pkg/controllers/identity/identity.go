// Package identity keeps this cluster's MCS identity (KEP-2149): its cluster ID
// from the ClusterProperty cluster.clusterset.k8s.io and its clusterset ID from
// clusterset.k8s.io. Properties that are absent are created from the
// controller's flags; a missing or invalid ID is reported, never a crash.
package identity

import (
	"errors"
	"fmt"
	"sync"

	"github.com/clusterset/clusterset/pkg/registry"
)

// Identity is who this cluster is within its clusterset.
type Identity struct {
	ClusterID    string
	ClusterSetID string
	// UID is the UID of this cluster's kube-system namespace, which
	// KEP-2149 names as a unique, stable identifier of a cluster: two
	// clusters given the same cluster ID tell each other apart by it in
	// their heartbeats. Empty when it could not be read; not part of what
	// Validate checks.
	UID string
}

// Validate says why an identity cannot be used: the rules of
// registry.ValidateClusterID (a DNS-1123 label, KEP-2149) and
// registry.ValidateClusterSetID (a DNS-1123 subdomain).
func (id Identity) Validate() error {
	if id.ClusterID == "" {
		return fmt.Errorf("ClusterProperty %s is missing or empty", ClusterIDProperty)
	}
	if err := registry.ValidateClusterID(id.ClusterID); err != nil {
		return fmt.Errorf("ClusterProperty %s: %w", ClusterIDProperty, err)
	}
	if id.ClusterSetID == "" {
		return fmt.Errorf("ClusterProperty %s is missing or empty", ClusterSetIDProperty)
	}
	if err := registry.ValidateClusterSetID(id.ClusterSetID); err != nil {
		return fmt.Errorf("ClusterProperty %s: %w", ClusterSetIDProperty, err)
	}
	return nil
}

// Store holds the identity that the identity controller last read. The first
// valid identity is fixed for the life of the process: a cluster ID must not
// change while the cluster is a member, so a later change is reported by
// Current as an error that asks for a restart rather than acted upon.
type Store struct {
	mu      sync.Mutex
	fixed   *Identity
	current Identity
	err     error
	ready   chan struct{}
}

// ErrNotRead is Current's error until the identity controller has read the
// ClusterProperties once: the process is starting.
var ErrNotRead = errors.New("cluster identity has not been read yet")

// NewStore returns a Store with no identity yet.
func NewStore() *Store {
	return &Store{ready: make(chan struct{}), err: ErrNotRead}
}

// Ready is closed once a valid identity is known.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Current returns the identity in force, or why there is none.
func (s *Store) Current() (Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fixed == nil {
		return Identity{}, s.err
	}
	if s.err != nil {
		return *s.fixed, s.err
	}
	if s.current.ClusterID != s.fixed.ClusterID || s.current.ClusterSetID != s.fixed.ClusterSetID {
		return *s.fixed, fmt.Errorf("cluster identity changed from %s/%s to %s/%s while running; restart the controller to take the new identity",
			s.fixed.ClusterSetID, s.fixed.ClusterID, s.current.ClusterSetID, s.current.ClusterID)
	}
	return *s.fixed, nil
}

// set records what the ClusterProperties say now.
func (s *Store) set(id Identity, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current, s.err = id, err
	if err == nil && s.fixed == nil {
		fixed := id
		s.fixed = &fixed
		close(s.ready)
	}
	if s.fixed != nil && s.fixed.UID == "" && id.UID != "" {
		// The kube-system namespace could not be read at first; its UID
		// completes the identity, it does not change it.
		s.fixed.UID = id.UID
	}
}

// Fixed returns a Store that already holds id, for tests and tools that do not
// run the identity controller.
func Fixed(id Identity) *Store {
	s := NewStore()
	s.set(id, id.Validate())
	return s
}
