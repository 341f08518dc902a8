package cloudmap

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/clusterset/clusterset/pkg/registry"
)

// ReaderOptions configures NewReader.
type ReaderOptions struct {
	// ClusterSetID is the clusterset whose records are read (required).
	ClusterSetID string
	// Endpoint and SystemNamespace are as in Options, with the same
	// defaults.
	Endpoint        string
	SystemNamespace string
}

// NewReader returns a registry.Reader of clusterSetID's records in Cloud Map
// with cfg (credentials and region; config.LoadDefaultConfig). It calls
// only DiscoverInstances, which config/iam/cloudmap-readonly-policy.json
// allows.
func NewReader(cfg aws.Config, o ReaderOptions) (registry.Reader, error) {
	if o.ClusterSetID == "" {
		return nil, errors.New("cloudmap: ClusterSetID is required")
	}
	opts := Options{ClusterSetID: o.ClusterSetID, Endpoint: o.Endpoint, SystemNamespace: o.SystemNamespace}
	opts.setDefaults()
	// A tool waits for one answer, not for ten attempts over minutes.
	opts.MaxAttempts = 3
	calls := &callCounter{}
	return reader{opts: opts, api: api{c: newClient(cfg, &opts, calls)}, calls: calls}, nil
}

type reader struct {
	opts  Options
	api   api
	calls *callCounter
}

// ReadService implements registry.Reader with one DiscoverInstances of the
// Cloud Map service key.Name in the namespace key.Namespace, three when the
// service holds more instances than one call returns (readService).
// Records of the AWS Cloud Map MCS controller are read too (they have no
// change time). Instances that do not decode give their cluster's
// StoredRecord a Problem; those naming no cluster, and a read that could
// not return every instance of the clusterset, are reported under
// ClusterID "".
func (rd reader) ReadService(ctx context.Context, key registry.ServiceKey) ([]registry.StoredRecord, error) {
	// Unfiltered, as the view reads: markers carry OWNER_CLUSTERSET_ID, not
	// CLUSTERSET_ID (hideFromAWSController). decodeInstances keeps only
	// this clusterset's instances.
	read, err := readService(ctx, rd.api, key.Namespace, key.Name, rd.opts.ClusterSetID, false)
	if isCode(err, "NamespaceNotFound", "ServiceNotFound") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("DiscoverInstances %s: %w", key, err)
	}
	insts := read.insts
	// decodeInstances names a bad instance by its ID, or a bad record by
	// its cluster's marker ID, which may be hashed (boundedID).
	clusterOf := map[string]string{}
	for _, in := range insts {
		c := in.Attrs[attrClusterID]
		clusterOf[in.ID] = c
		if c != "" {
			clusterOf[markerID(rd.opts.ClusterSetID, c)] = c
		}
	}
	problems := map[string]string{}
	if read.incomplete {
		problems[""] = fmt.Sprintf("more than %d instances claim clusterset %s in this service, more than one DiscoverInstances returns: records may be missing", maxDiscoverResults, rd.opts.ClusterSetID)
	}
	recs := decodeInstances(rd.opts.ClusterSetID, key.Namespace, key.Name, insts, func(id string, err error) {
		c := clusterOf[id]
		if problems[c] == "" {
			problems[c] = "instance " + id + ": " + err.Error()
		}
	})
	var out []registry.StoredRecord
	for i := range recs {
		c := recs[i].ClusterID
		out = append(out, registry.StoredRecord{ClusterID: c, Record: &recs[i], Changed: recs[i].Changed, Problem: problems[c]})
		delete(problems, c)
	}
	for c, p := range problems {
		out = append(out, registry.StoredRecord{ClusterID: c, Problem: p})
	}
	slices.SortFunc(out, func(a, b registry.StoredRecord) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, nil
}

// ErrNoSystemNamespace is returned by a Reader's ReadHeartbeats when Cloud
// Map has no SystemNamespace in the account and region read: no clusterset
// controller ever wrote there, which usually means the wrong account or
// region rather than silent members.
var ErrNoSystemNamespace = errors.New("no clusterset controller has written to this account and region")

// ReadHeartbeats implements registry.Reader: the heartbeat instances in
// SystemNamespace. Clusters run by the AWS controller have none. Without
// SystemNamespace it returns an error wrapping ErrNoSystemNamespace.
func (rd reader) ReadHeartbeats(ctx context.Context) ([]registry.Heartbeat, error) {
	out, err := readHeartbeats(ctx, rd.api, rd.opts.SystemNamespace, rd.opts.ClusterSetID)
	if isCode(err, "NamespaceNotFound") {
		return nil, fmt.Errorf("Cloud Map namespace %s not found: %w", rd.opts.SystemNamespace, ErrNoSystemNamespace)
	}
	if isCode(err, "ServiceNotFound") {
		return nil, nil
	}
	slices.SortFunc(out, func(a, b registry.Heartbeat) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out, err
}

// readHeartbeats returns the newest heartbeat of every cluster of
// clusterSetID, in no order. Cloud Map's NamespaceNotFound and
// ServiceNotFound are returned as they are.
func readHeartbeats(ctx context.Context, a api, systemNamespace, clusterSetID string) ([]registry.Heartbeat, error) {
	insts, _, err := a.discover(ctx, systemNamespace, heartbeatService, attrClusterSetID, clusterSetID)
	if err != nil {
		return nil, err
	}
	insts, _ = dedupe(insts)
	// Skipped instances are not logged: this runs at every liveness check,
	// and a cluster left without a valid heartbeat shows as silent (in
	// doctor, and in the members' liveness) whatever the reason.
	return decodeHeartbeats(clusterSetID, insts, func(string, error) {}), nil
}

// decodeHeartbeats returns the newest heartbeat of every cluster of
// clusterSetID among insts (de-duplicated), in no order. skip is called
// with the ID of each instance that is not a heartbeat of the clusterset
// naming a cluster, or whose time does not parse, and the reason. An
// instance that is not the newest of its cluster is not skipped: its
// cluster's newest heartbeat is returned.
func decodeHeartbeats(clusterSetID string, insts []instance, skip func(id string, err error)) []registry.Heartbeat {
	newest := map[string]registry.Heartbeat{}
	for _, in := range insts {
		a := in.Attrs
		if a[attrRecordKind] != kindHeartbeat || a[attrClusterSetID] != clusterSetID || a[attrClusterID] == "" {
			skip(in.ID, fmt.Errorf("not a heartbeat of clusterset %s naming a cluster", clusterSetID))
			continue
		}
		ms, err := strconv.ParseInt(a[attrHeartbeat], 10, 64)
		if err != nil {
			skip(in.ID, fmt.Errorf("%s: %w", attrHeartbeat, err))
			continue
		}
		hb := registry.Heartbeat{ClusterID: a[attrClusterID], RenewTime: time.UnixMilli(ms).UTC(), Holder: a[attrHeartbeatHolder]}
		// A lease past time.Duration's range (292 years) says nothing
		// either: multiplied, it would wrap around to any value.
		if s, err := strconv.ParseInt(a[attrHeartbeatLease], 10, 64); err == nil && s > 0 && s <= int64(math.MaxInt64/time.Second) {
			hb.LeaseDuration = time.Duration(s) * time.Second
		}
		// The first heartbeat of a cluster counts whatever its time: one
		// before year 1, the zero time.Time, is not after "none".
		if cur, ok := newest[hb.ClusterID]; !ok || hb.RenewTime.After(cur.RenewTime) {
			newest[hb.ClusterID] = hb
		}
	}
	out := make([]registry.Heartbeat, 0, len(newest))
	for _, hb := range newest {
		out = append(out, hb)
	}
	return out
}
