#!/usr/bin/env bash
# A minimal root filesystem for kube-proxy: iptables with both backends and their
# extensions, and the sh/grep/ln the iptables-wrapper uses, copied from the node's Debian
# root filesystem (the same iptables build the node runs).
#   kube-proxy-root.sh ROOTFS DEST
set -euo pipefail
src=$1 dest=$2
rm -rf "$dest"
mkdir -p "$dest"/{lib/x86_64-linux-gnu,lib64,bin,usr/sbin,usr/local/bin,usr/lib/x86_64-linux-gnu,etc,tmp,run,var/lib}
for lib in libc.so.6 libxtables.so.12 libmnl.so.0 libnftnl.so.11 libip4tc.so.2 libip6tc.so.2 libpcre2-8.so.0 \
  libm.so.6 libnetfilter_conntrack.so.3 libnfnetlink.so.0; do
  cp -L "$src/lib/x86_64-linux-gnu/$lib" "$dest/lib/x86_64-linux-gnu/"
done
cp -L "$src/lib64/ld-linux-x86-64.so.2" "$dest/lib64/"
cp -a "$src/usr/lib/x86_64-linux-gnu/xtables" "$dest/usr/lib/x86_64-linux-gnu/"
cp -L "$src/bin/dash" "$dest/bin/sh"
cp -L "$src/bin/grep" "$src/bin/ln" "$dest/bin/"
cp -L "$src/usr/sbin/xtables-nft-multi" "$src/usr/sbin/xtables-legacy-multi" "$dest/usr/sbin/"
for backend in nft legacy; do
  for tool in iptables ip6tables; do
    for suffix in "" -save -restore; do ln -s "xtables-$backend-multi" "$dest/usr/sbin/$tool-$backend$suffix"; done
  done
done
cp -L "$src/etc/protocols" "$src/etc/services" "$src/etc/ethertypes" "$dest/etc/" 2>/dev/null || true
echo 'hosts: files dns' >"$dest/etc/nsswitch.conf"
chmod 1777 "$dest/tmp"
install -m 755 "$(dirname "$0")/iptables-wrapper" "$dest/usr/sbin/iptables-wrapper"
for tool in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf iptables-wrapper "$dest/usr/sbin/$tool"
done
