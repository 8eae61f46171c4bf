#!/usr/bin/env bash
# Prints which path a build takes, logging the choice and why on stderr (lib.sh):
#   choose.sh node          the kind node image to use, or "offline" (node-image.sh)
#   choose.sh python-base   "registry" (FROM $PYTHON_IMAGE) or "offline" (for make image)
# The registry probe is bounded ($REGISTRY_PROBE_TIMEOUT, 5 s); KIND_NODE_IMAGE and
# IMAGE_OFFLINE set explicitly win without a probe. docs/kind.md.
source "$(dirname "$0")/lib.sh"

case ${1:-} in
  node) choose_node_image ;;
  python-base) choose_python_base ;;
  *) die "usage: choose.sh node|python-base" ;;
esac
