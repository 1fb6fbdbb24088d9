// Builds the pinned helm CLI for tests. No Go code: see tools/setup.sh.
module mcpguard.dev/tools/helm

go 1.25.0

require helm.sh/helm/v3 v3.20.2
