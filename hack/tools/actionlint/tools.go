//go:build tools

// actionlint's upstream main (go build github.com/rhysd/actionlint/cmd/actionlint); the
// blank import keeps its dependencies in go.mod and go.sum under `go mod tidy`.
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"
