package cloudmap

import (
	"flag"
	"strings"
	"testing"
	"time"
)

// The flags give Options their defaults, and a flag's 0 that disables a
// sweep becomes Options' negative value (Options' 0 is the default).
func TestFlagsOptions(t *testing.T) {
	parse := func(args ...string) Options {
		t.Helper()
		var f Flags
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		f.AddFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f.Options("set", "cls")
	}
	o := parse()
	if o.ClusterSetID != "set" || o.ClusterID != "cls" || o.PollInterval != DefaultPollInterval || o.FullResyncPeriod != DefaultFullResyncPeriod ||
		o.ForeignSweepPeriod != time.Minute || o.ForeignPollInterval != 10*time.Second || o.MaxInstancesPerService != 1000 || o.MaxInstancesPerNamespace != 2000 || o.MotoWorkarounds {
		t.Errorf("defaults: %+v", o)
	}
	o = parse("--cloudmap-foreign-sweep-period=0", "--cloudmap-foreign-poll-interval=0", "--cloudmap-poll-interval=3s", "--cloudmap-moto-workarounds")
	if o.ForeignSweepPeriod >= 0 || o.ForeignPollInterval >= 0 || o.PollInterval != 3*time.Second || !o.MotoWorkarounds {
		t.Errorf("0 must disable the sweeps, the rest pass through: %+v", o)
	}
	o.setDefaults()
	if o.ForeignSweepPeriod >= 0 || o.ForeignPollInterval >= 0 {
		t.Errorf("defaults turned a disabled sweep back on: %+v", o)
	}
	// One DiscoverInstances returns at most 1,000 instances: a larger
	// per-service quota would let records grow past what readers read.
	o = parse("--cloudmap-max-instances-per-service=5000", "--cloudmap-max-instances-per-namespace=20000")
	o.setDefaults()
	if o.MaxInstancesPerService != 1000 || o.MaxInstancesPerNamespace != 20000 {
		t.Errorf("quotas of 5000 per service and 20000 per namespace gave %d and %d, want 1000 and 20000", o.MaxInstancesPerService, o.MaxInstancesPerNamespace)
	}
}

// TestFlagsValidate: values the backend cannot use fail at start, naming
// the flag; the defaults pass.
func TestFlagsValidate(t *testing.T) {
	defaults := func() Flags {
		var f Flags
		f.AddFlags(flag.NewFlagSet("test", flag.ContinueOnError))
		return f
	}
	if f := defaults(); f.Validate() != nil {
		t.Fatalf("the defaults: %v", f.Validate())
	}
	for name, change := range map[string]func(*Flags){
		"--cloudmap-max-instances-per-service":   func(f *Flags) { f.MaxPerService = 1001 },
		"--cloudmap-max-instances-per-namespace": func(f *Flags) { f.MaxPerNamespace = 0 },
		"--cloudmap-poll-interval":               func(f *Flags) { f.PollInterval = 0 },
		"--cloudmap-foreign-poll-interval":       func(f *Flags) { f.ForeignPoll = -time.Second },
	} {
		f := defaults()
		change(&f)
		if err := f.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Validate() = %v, want an error naming it", name, err)
		}
	}
}
