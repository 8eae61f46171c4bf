# kube-proxy on a minimal root filesystem: iptables (nft and legacy backends) and the
# iptables-wrapper that picks the backend the node uses, as upstream's image does.
FROM scratch
COPY kproxy-root/ /
COPY kube-proxy /usr/local/bin/kube-proxy
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
