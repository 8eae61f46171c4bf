// The floor of the benchmarks: the least a TLS admission webhook can do (benchmarks/gofloor/).
module github.com/pod-replace-guard/pod-replace-guard/benchmarks/gofloor

go 1.24.0
