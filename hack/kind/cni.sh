#!/usr/bin/env bash
# The offline stand-in for kindnetd: on every node a ptp + host-local CNI configuration
# for the node's podCIDR (assigned by kube-controller-manager) and a route to every other
# node's podCIDR through that node's address on the kind Docker network.
source "$(dirname "$0")/lib.sh"

query='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}'
rows=()
for _ in $(seq 90); do
  mapfile -t rows < <(kubectl get nodes -o jsonpath="$query" 2>/dev/null)
  complete=${#rows[@]}
  for row in "${rows[@]}"; do [[ $(wc -w <<<"$row") -eq 3 ]] || complete=0; done
  ((complete > 0)) && break
  sleep 2
done
((complete > 0)) || die "nodes without a podCIDR or an InternalIP after 180 s: ${rows[*]}"
for row in "${rows[@]}"; do
  read -r name cidr ip <<<"$row"
  sed "s,@SUBNET@,$cidr," "$HACK_KIND/cni-ptp.conflist.tmpl" |
    docker exec -i "$name" sh -c 'cat > /etc/cni/net.d/10-prg-ptp.conflist'
  for other in "${rows[@]}"; do
    read -r other_name other_cidr other_ip <<<"$other"
    [[ $other_name == "$name" ]] || docker exec "$name" ip route replace "$other_cidr" via "$other_ip"
  done
  log "$name: pods in $cidr, node address $ip"
done
