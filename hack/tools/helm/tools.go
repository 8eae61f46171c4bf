//go:build tools

// helm's upstream main (go build helm.sh/helm/v3/cmd/helm); the blank import keeps its
// dependencies in go.mod and go.sum under `go mod tidy`.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
