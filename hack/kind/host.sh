#!/usr/bin/env bash
# Prepares a Linux host to run kind: a Docker engine that answers, debootstrap for the
# offline node-image build, and kind itself (pinned, built from Go modules). On a
# developer's machine with Docker running this only checks; it installs and starts
# dockerd (Debian's docker.io) where no daemon answers, as on a fresh CI machine.
source "$(dirname "$0")/lib.sh"

need_apt=()
docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
if ((${#need_apt[@]})); then
  command -v apt-get >/dev/null || die "missing ${need_apt[*]} and no apt-get: install Docker and debootstrap"
  log "installing ${need_apt[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Why a runc shim, and only on some hosts: `docker run --privileged` (how kind starts its
# nodes) asks for every capability. On a VM whose capability bounding set lacks
# CAP_SYS_RESOURCE (bit 24), runc then fails with "unable to apply caps". The shim
# removes that one capability from the OCI config (--bundle) and from the process file
# of `docker exec` (--process) before calling runc. A host with a full bounding set,
# that is every ordinary machine, never gets it.
capbnd=$(awk '/^CapBnd/{print $2}' /proc/self/status)
if (( (0x$capbnd >> 24 & 1) == 0 )); then
  install -m 0755 "$HACK_KIND/host/runc-drop-sys-resource" /usr/local/bin/runc-drop-sys-resource
  if ! grep -qs '"default-runtime": *"runc-drop-sys-resource"' /etc/docker/daemon.json; then
    docker info >/dev/null 2>&1 &&
      die "this host lacks CAP_SYS_RESOURCE and dockerd runs without the runc-drop-sys-resource runtime: stop dockerd and run again"
    mkdir -p /etc/docker
    python3 "$HACK_KIND/host/daemon-json.py" /etc/docker/daemon.json
    log "CAP_SYS_RESOURCE is not in this host's bounding set: dockerd's default runtime now drops it"
  fi
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: $KIND_CACHE/logs/dockerd.log)"
  # setsid: the daemon must outlive the make target that started it.
  setsid nohup dockerd --host unix:///var/run/docker.sock >>"$KIND_CACHE/logs/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -n 30 "$KIND_CACHE/logs/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
fi
docker info --format 'docker: engine {{.ServerVersion}}, runtime {{.DefaultRuntime}}, cgroup v{{.CgroupVersion}} ({{.CgroupDriver}}), storage {{.Driver}}' >&2

if [[ ! -x "$KIND_BIN" ]] || ! "$KIND_BIN" version 2>/dev/null | grep -q "kind $KIND_VERSION "; then
  command -v go >/dev/null || die "go is needed to build kind $KIND_VERSION"
  log "building kind $KIND_VERSION from Go modules"
  GOBIN=$(dirname "$KIND_BIN") go install "sigs.k8s.io/kind@$KIND_VERSION"
fi
"$KIND_BIN" version >&2
