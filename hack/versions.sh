# Versions of the real components that tests, the sandbox and the demo run.
# Sourced by hack/*.sh and read by the Makefile; change a version here and the
# next build puts the new binary beside the old one in the cache.
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
KWOK_VERSION=v0.8.0
COREDNS_VERSION=v1.15.0
CNI_PLUGINS_VERSION=v1.10.0
PROMETHEUS_VERSION=v0.316.0 # promtool checks and unit-tests config/monitoring
