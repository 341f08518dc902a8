package registry

import (
	"context"
	"time"
)

// DefaultLeaseDuration is how long a heartbeat is meant to last when its
// writer does not say: the backends' default lease.
const DefaultLeaseDuration = 60 * time.Second

// Reader reads what a registry holds, once, for tools such as `kubectl
// clusterset status` and `doctor`: it starts no watch, writes nothing and
// needs only read access (any member's credentials may read every record).
// Each backend has one (hub.NewReader, cloudmap.NewReader).
type Reader interface {
	// ReadService returns every cluster's record of key, sorted by cluster
	// ID; none when no cluster exports it. An error means the registry
	// could not be read at all.
	ReadService(ctx context.Context, key ServiceKey) ([]StoredRecord, error)
	// ReadHeartbeats returns every cluster's liveness record, sorted by
	// cluster ID.
	ReadHeartbeats(ctx context.Context) ([]Heartbeat, error)
}

// StoredRecord is one cluster's record of a service as a registry holds it.
type StoredRecord struct {
	ClusterID string
	// Record is the decoded record; nil when it cannot be read, and Problem
	// then says why (a missing chunk, an undecodable head, an attribute
	// that does not parse). Problem may also be set beside a Record when
	// parts of it were left out.
	Record  *Record
	Problem string
	// Changed is when the record's content last changed: Record.Changed
	// (the exporting cluster's clock) when the record has one, else the
	// best the backend knows (the hub: its last accepted write of the
	// record), else zero.
	Changed time.Time
}

// Heartbeat is one cluster's liveness record.
type Heartbeat struct {
	ClusterID string
	// RenewTime is the cluster's last renewal, by its own clock.
	RenewTime time.Time
	// LeaseDuration is how long the cluster means a renewal to last; 0
	// when it did not say.
	LeaseDuration time.Duration
	// Holder identifies the member that wrote the heartbeat (the UID of
	// its kube-system namespace), so that two members given the same
	// cluster ID tell each other apart; "" when it did not say.
	Holder string
}
