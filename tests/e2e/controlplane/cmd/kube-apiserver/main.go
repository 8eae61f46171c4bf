// Command kube-apiserver is the upstream API server, built from the
// k8s.io/kubernetes module at the version pinned in go.mod. It mirrors
// cmd/kube-apiserver/apiserver.go so that the end-to-end suite runs against
// the real admission chain, not a fake.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	os.Exit(cli.Run(command))
}
