//go:build tools

// The upstream mains this module builds (go build k8s.io/kubernetes/cmd/...); the
// blank imports keep their dependencies in go.mod and go.sum under `go mod tidy`.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
