//go:build tools

// promtool's upstream main (go build github.com/prometheus/prometheus/cmd/promtool); the
// blank import keeps its dependencies in go.mod and go.sum under `go mod tidy`.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
