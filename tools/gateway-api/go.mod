// Pins the Gateway API release whose CRDs (config/crd/standard) the tests install. No Go code and nothing is
// built: tools/setup.sh downloads the module and copies its CRD YAML into the cache.
module mcpguard.dev/tools/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.6.3
