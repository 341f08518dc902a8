package cloudmap

import (
	"flag"
	"fmt"
	"time"
)

// Flags are the clusterset-controller flags of the Cloud Map backend
// (--registry cloudmap), documented in docs/configuration.md.
type Flags struct {
	PollInterval, FullResync, ForeignSweep, ForeignPoll time.Duration
	MaxPerService, MaxPerNamespace                      int
	MotoWorkarounds                                     bool
}

// AddFlags registers the flags on fs with the defaults of Options. A zero
// sweep or foreign poll interval disables it.
func (f *Flags) AddFlags(fs *flag.FlagSet) {
	fs.DurationVar(&f.PollInterval, "cloudmap-poll-interval", DefaultPollInterval, "how often Cloud Map is checked for changes: one DiscoverInstancesRevision per poll when nothing changed, so about 2.6 million calls a month per member at 1s (--registry cloudmap)")
	fs.DurationVar(&f.FullResync, "cloudmap-full-resync", DefaultFullResyncPeriod, "every Cloud Map service is read in full at least this often, the largest idle cost that grows with the number of services (--registry cloudmap)")
	fs.DurationVar(&f.ForeignSweep, "cloudmap-foreign-sweep-period", time.Minute, "how often the Cloud Map services are listed to find writes by other controllers (the AWS Cloud Map MCS controller), which bump no change beacon: new services, and once such writes were seen, a revision check of every service; 0 disables (--registry cloudmap)")
	fs.DurationVar(&f.ForeignPoll, "cloudmap-foreign-poll-interval", 10*time.Second, "once Cloud Map holds records written by another controller (a mixed clusterset with the AWS Cloud Map MCS controller), how often the namespaces holding them and new services are checked; a clusterset of clusterset-controllers only never pays for it; 0 disables, leaving the foreign sweep (--registry cloudmap)")
	fs.IntVar(&f.MaxPerService, "cloudmap-max-instances-per-service", 1000, "the account's Cloud Map quota of instances per service, at most 1000 (one DiscoverInstances returns no more); exports that would exceed it, counting every writer's instances in the service, are refused with a condition")
	fs.IntVar(&f.MaxPerNamespace, "cloudmap-max-instances-per-namespace", 2000, "the account's Cloud Map quota of instances per namespace; exports that would exceed it, counting every writer's instances in the namespace, are refused with a condition")
	fs.BoolVar(&f.MotoWorkarounds, "cloudmap-moto-workarounds", false, "for tests against moto's server only: deregister instances before registering them again, because moto keeps duplicates")
}

// Validate returns an error naming the first flag whose value the backend
// cannot use: a quota below 1, or more instances per service than one
// DiscoverInstances returns (1,000), which readers could not read; a
// negative interval.
func (f *Flags) Validate() error {
	switch {
	case f.MaxPerService < 1 || f.MaxPerService > maxDiscoverResults:
		return fmt.Errorf("--cloudmap-max-instances-per-service=%d: must be 1 to %d, the most instances one DiscoverInstances returns, so that readers can read every service", f.MaxPerService, maxDiscoverResults)
	case f.MaxPerNamespace < 1:
		return fmt.Errorf("--cloudmap-max-instances-per-namespace=%d: must be at least 1", f.MaxPerNamespace)
	case f.PollInterval <= 0:
		return fmt.Errorf("--cloudmap-poll-interval=%s: must be positive", f.PollInterval)
	case f.FullResync < 0 || f.ForeignSweep < 0 || f.ForeignPoll < 0:
		return fmt.Errorf("--cloudmap-full-resync, --cloudmap-foreign-sweep-period and --cloudmap-foreign-poll-interval must not be negative")
	}
	return nil
}

// Options returns the Options the flags set, for the cluster clusterID of
// clusterSetID. A flag's 0 that means "disabled" becomes the negative value
// Options uses for that, since 0 in Options means the default.
func (f *Flags) Options(clusterSetID, clusterID string) Options {
	disabledIfZero := func(d time.Duration) time.Duration {
		if d == 0 {
			return -1
		}
		return d
	}
	return Options{
		ClusterSetID:             clusterSetID,
		ClusterID:                clusterID,
		PollInterval:             f.PollInterval,
		FullResyncPeriod:         f.FullResync,
		ForeignSweepPeriod:       disabledIfZero(f.ForeignSweep),
		ForeignPollInterval:      disabledIfZero(f.ForeignPoll),
		MotoWorkarounds:          f.MotoWorkarounds,
		MaxInstancesPerService:   f.MaxPerService,
		MaxInstancesPerNamespace: f.MaxPerNamespace,
	}
}
