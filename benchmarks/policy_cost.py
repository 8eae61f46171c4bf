"""CEL runtime cost of a generated policy, per update and pod size, with the API server's
own CEL environment and cost model (tests/e2e/controlplane/tools/celcost).

    (cd tests/e2e/controlplane/tools/celcost && go build -o /tmp/celcost .)
    python -m benchmarks.policy_cost [POLICY.yaml] [--celcost /tmp/celcost] [--sizes 3 100]
        [--minimal 8000 17000] [--bisect 10000]

POLICY.yaml defaults to benchmarks/vap.yaml (the generated policy). The pods are those
of the end-to-end suite's big-pod test (10 env vars, 5 args, a port, a volume mount,
resources, two HTTP probes and a security context per container, 10 volumes); the
updates: a label (what the API-server benchmark patches), every image (allowed), a
finalizer (denied) and one container's env (denied). Also the most minimal containers
(name, image and the API server's defaults) with every image, one image or a label
changed, and (--bisect) the pod size past which the per-program limit is reached.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.pods import big_pod

REPO = Path(__file__).resolve().parent.parent
Pod = dict[str, Any]


def minimal_pod(containers: int) -> Pod:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "m", "namespace": "n", "uid": "u"},
        "spec": {
            "containers": [
                {
                    "name": f"c{index}",
                    "image": "r/p:1",
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
                for index in range(containers)
            ],
            "restartPolicy": "Always",
        },
    }


def updates(old: Pod) -> dict[str, Pod]:
    label, images, finalizer, env = (copy.deepcopy(old) for _ in range(4))
    label["metadata"].setdefault("labels", {})["x"] = "y"
    for container in images["spec"]["containers"]:
        container["image"] += "-2"
    finalizer["metadata"]["finalizers"] = ["example.com/x"]
    last = env["spec"]["containers"][-1]
    last["env"] = [*last.get("env", [])[1:], {"name": "NEW", "value": "x"}]
    return {"label": label, "images": images, "finalizer": finalizer, "env": env}


def cost(celcost: str, policy: Path, old: Pod, new: Pod, work: Path) -> dict[str, Any]:
    (work / "old.json").write_text(json.dumps(old))
    (work / "new.json").write_text(json.dumps(new))
    result = subprocess.run(
        [celcost, str(policy), str(work / "old.json"), str(work / "new.json")],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    variables: list[dict[str, Any]] = json.loads(result.stdout)["variables"]
    worst = max(variables, key=lambda v: int(v["actual"]))
    errors = [v["name"] for v in variables if str(v["result"]).startswith("error")]
    return {
        "total": sum(int(v["actual"]) for v in variables),
        "largest": f"{worst['name']} {int(worst['actual']):,}",
        "denies": [
            v["result"]
            for v in variables
            if v["name"].startswith("changed") and v["result"] not in ("[]", "")
        ],
        "errors": errors,
    }


def first_refused(celcost: str, policy: Path, work: Path, high: int) -> int:
    """The fewest minimal containers whose every-image update passes the per-program
    limit (a cost error, so a refusal), by bisection below ``high``; 0 if ``high`` passes."""
    old = minimal_pod(high)
    if not cost(celcost, policy, old, updates(old)["images"], work)["errors"]:
        return 0
    low = 1  # judged
    while high - low > 1:
        middle = (low + high) // 2
        old = minimal_pod(middle)
        if cost(celcost, policy, old, updates(old)["images"], work)["errors"]:
            high = middle
        else:
            low = middle
    return high


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("policy", nargs="?", default=str(REPO / "benchmarks" / "vap.yaml"))
    parser.add_argument("--celcost", default="/tmp/celcost")
    parser.add_argument("--sizes", type=int, nargs="*", default=[3, 100])
    parser.add_argument("--minimal", type=int, nargs="*", default=[1000, 7000, 8000])
    parser.add_argument(
        "--bisect",
        type=int,
        metavar="HIGH",
        help="find the fewest minimal containers (below HIGH) past the per-program limit",
    )
    args = parser.parse_args(argv)
    documents = list(yaml.safe_load_all(Path(args.policy).read_text()))
    policy = next(d for d in documents if d and d.get("kind") == "ValidatingAdmissionPolicy")
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        policy_file = work / "policy.json"
        policy_file.write_text(json.dumps(policy))
        sizes = {v["name"]: len(v["expression"].encode()) for v in policy["spec"]["variables"]}
        print(f"expression bytes: {sizes} total {sum(sizes.values()):,}")
        for containers in args.sizes:
            old = big_pod(containers, uid="u")
            for update, new in updates(old).items():
                found = cost(args.celcost, policy_file, old, new, work)
                print(f"{containers} containers, {update}: {found}")
        for containers in args.minimal:
            old = minimal_pod(containers)
            size = len(json.dumps(old))
            one = copy.deepcopy(old)
            one["spec"]["containers"][-1]["image"] += "-2"
            for update, new in (
                ("every image", updates(old)["images"]),
                ("one image", one),
                ("a label", updates(old)["label"]),
            ):
                found = cost(args.celcost, policy_file, old, new, work)
                print(f"{containers} minimal containers ({size:,} bytes), {update}: {found}")
        if args.bisect:
            refused = first_refused(args.celcost, policy_file, work, args.bisect)
            size = len(json.dumps(minimal_pod(refused or args.bisect)))
            print(
                f"first refused for cost: {refused} minimal containers ({size:,} bytes)"
                if refused
                else f"{args.bisect} minimal containers ({size:,} bytes) are judged"
            )


if __name__ == "__main__":
    main()
