# One Kubernetes component (kube-apiserver, kube-controller-manager, kube-scheduler, etcd,
# coredns) on an empty image with the glibc runtime its cgo-linked binary needs, taken
# from the node's Debian root filesystem (see hack/kind/node-image.sh).
FROM scratch
COPY glibc/ /
ARG BIN
COPY ${BIN} /usr/local/bin/${BIN}
ENV PATH=/usr/local/bin:/usr/bin:/bin
