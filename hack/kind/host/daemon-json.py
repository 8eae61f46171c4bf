"""Adds the runc-drop-sys-resource runtime to dockerd's daemon.json as its default.

Used by hack/kind/host.sh only on hosts whose capability bounding set lacks
CAP_SYS_RESOURCE; other keys of an existing daemon.json are kept.
"""

import json
import os
import sys

path = sys.argv[1]
config = {}
if os.path.exists(path):
    with open(path) as f:
        config = json.load(f)
config.setdefault("runtimes", {})["runc-drop-sys-resource"] = {
    "path": "/usr/local/bin/runc-drop-sys-resource"
}
config["default-runtime"] = "runc-drop-sys-resource"
with open(path, "w") as f:
    json.dump(config, f, indent=2)
