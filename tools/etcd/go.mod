// Builds the pinned etcd server for tests. No Go code: see tools/setup.sh.
module mcpguard.dev/tools/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.16
