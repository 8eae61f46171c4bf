"""3. API-server level: pod UPDATE latency through a real kube-apiserver.

The local control plane of the end-to-end suite (etcd + kube-apiserver v1.34 on
loopback, ``tests.e2e.cluster.local_control_plane``) serves label patches of pods
(merge patches: an UPDATE for admission) sent with the official Python client, in
five configurations that take turns in every round:

- ``none``: no admission configured for pods beyond the API server's built-ins;
- ``webhook``: pod-replace-guard (``python -m webhook serve``, production settings)
  registered with deploy/'s ValidatingWebhookConfiguration, by url on 127.0.0.1;
- ``vap``: the ValidatingAdmissionPolicy of benchmarks/vap.yaml (CEL, in-process),
  generated from the rule list by ``pod-replace-guard policy`` (the same file as
  deploy/components/policy/policy.yaml, checked equal to the generator's output),
  as much of the webhook's rules as CEL can express;
- ``vap_minimal``: benchmarks/vap-minimal.yaml, only the rules the API server's own
  pod-update validation does not already enforce;
- ``floor``: the Go floor (benchmarks/gofloor/: decode, echo the uid, allow) registered
  with the same ValidatingWebhookConfiguration, only the url differs: the least any
  webhook costs the API server. ``ratio_vs_floor_p50`` is our added p50 over its.

Each configuration is checked to be in force before it is measured (a dry-run
finalizer patch is denied, or allowed for ``none``). Latency is measured in the
client around each call (the response is read but not turned into model objects, so
the client's own cost stays small and equal across configurations): many calls one
after another on one pod, then a few threads with their own pod and client at once.
The pods are realistic Deployment-like pods (3 containers), so each review is ~15 KB.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import payloads, servers
from benchmarks.common import (
    REPO,
    cpu_seconds,
    log,
    median,
    percentile,
    quick,
    ratio,
    rounded,
    tree_cpu_seconds,
)
from webhook.admission_policy import POLICY_NAME
from webhook.certs import write_certificates

NAMESPACE = "bench"
# configuration -> (manifest, policy name)
POLICIES = {
    "vap": (REPO / "benchmarks" / "vap.yaml", POLICY_NAME),
    "vap_minimal": (REPO / "benchmarks" / "vap-minimal.yaml", "pod-replace-guard-cel-minimal"),
}
PROBE = {"metadata": {"finalizers": ["bench.example.com/probe"]}}
CONFIGS = ("none", "webhook", "vap", "vap_minimal", "floor")
# The Go floor's answer to the probe (benchmarks/gofloor/main.go DenyMessage).
FLOOR_DENIAL = "gofloor: probe denied"


def _pod_manifest(name: str) -> dict[str, Any]:
    source = payloads.pod(containers=3, annotation_bytes=256, name=name)
    metadata = source["metadata"]
    spec = source["spec"]
    spec["serviceAccountName"] = spec["serviceAccount"] = "default"
    spec["volumes"] = [volume for volume in spec["volumes"] if volume["name"] == "config"]
    for container in spec["containers"]:
        container["volumeMounts"] = [
            mount for mount in container["volumeMounts"] if mount["name"] == "config"
        ]
    del spec["nodeName"]  # no scheduler or kubelet: the pod stays Pending
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": metadata["labels"],
            "annotations": metadata["annotations"],
            "ownerReferences": metadata["ownerReferences"],
        },
        "spec": spec,
    }


def _latencies_sequential(core: Any, pod: str, count: int, tag: str) -> list[float]:
    values = []
    for index in range(count):
        body = {"metadata": {"labels": {"bench-seq": f"{tag}-{index}"}}}
        started = time.perf_counter()
        response = core.patch_namespaced_pod(pod, NAMESPACE, body, _preload_content=False)
        response.read()  # the whole answer, as a client reads it
        response.release_conn()
        values.append((time.perf_counter() - started) * 1000)
    return values


def _latencies_concurrent(
    make_core: Callable[[], Any], pods: list[str], count: int, tag: str
) -> tuple[list[float], float]:
    results: list[list[float]] = [[] for _ in pods]
    errors: list[BaseException] = []
    cores = [make_core() for _ in pods]
    barrier = threading.Barrier(len(pods) + 1)

    def work(slot: int) -> None:
        try:
            barrier.wait()
            results[slot] = _latencies_sequential(cores[slot], pods[slot], count, f"{tag}-{slot}")
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(len(pods))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return [value for chunk in results for value in chunk], elapsed


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": rounded(percentile(values, 0.50)),
        "p90_ms": rounded(percentile(values, 0.90)),
        "p99_ms": rounded(percentile(values, 0.99)),
        "mean_ms": rounded(sum(values) / len(values)),
    }


class _Admission:
    """Switches between the configurations and waits until each is in force."""

    def __init__(self, plane: Any, core: Any, urls: dict[str, str], ca_bundle: str) -> None:
        self.plane = plane
        self.core = core
        self.urls = urls  # webhook configuration -> url
        self.ca_bundle = ca_bundle

    def _probe(self) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.patch_namespaced_pod(
                "bench-0", NAMESPACE, PROBE, dry_run="All", _preload_content=False
            )
            response.read()
        except ApiException as error:
            text = str(error.body or "")
            for config, (_, name) in POLICIES.items():
                if f"ValidatingAdmissionPolicy '{name}'" in text:
                    return config
            if FLOOR_DENIAL in text:
                return "floor"
            if "admission webhook" in text and "denied the request" in text:
                return "webhook"
            return f"error {error.status}: {text[:200]}"
        return "none"

    def use(self, config: str, timeout: float = 60.0) -> None:
        from tests.e2e.cluster import install_webhook, remove_webhook

        if config in self.urls:
            install_webhook(self.plane, self.urls[config], self.ca_bundle, "Fail")
        else:
            remove_webhook(self.plane)
        for policy, (manifest, _) in POLICIES.items():
            if policy != config:
                self.plane.kubectl(
                    "delete", "-f", str(manifest), "--ignore-not-found", "--wait=true"
                )
        if config in POLICIES:
            self.plane.kubectl("apply", "-f", str(POLICIES[config][0]))
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self._probe()
            if seen == config:
                # The informers of every API server goroutine have caught up once the
                # probe sees the change; give stragglers a moment.
                time.sleep(0.5)
                return
            time.sleep(0.2)
        raise TimeoutError(f"admission configuration {config} not in force (probe: {seen})")


@contextlib.contextmanager
def _control_plane(work_dir: Path) -> Iterator[Any]:
    from tests.e2e.cluster import local_control_plane

    with local_control_plane(work_dir / "controlplane") as plane:
        yield plane


def run(work_dir: Path) -> dict[str, Any]:
    short = quick()
    rounds = 1 if short else 3
    sequential = 150 if short else 600
    threads = 4
    per_thread = 40 if short else 150
    try:
        from kubernetes import client

        from tests.e2e.cluster import ControlPlaneUnavailable
    except ImportError as error:  # the e2e support is not there
        return {"skipped": f"tests.e2e.cluster is not importable: {error}"}

    log(
        f"apiserver: {rounds} round(s) x {len(CONFIGS)} configurations: {sequential} sequential "
        f"label patches, then {threads} threads x {per_thread}"
    )
    cert_dir = work_dir / "certs"
    issued = write_certificates(cert_dir, "pod-replace-guard", "pod-replace-guard")
    try:
        plane_context = _control_plane(work_dir)
        plane = plane_context.__enter__()
    except ControlPlaneUnavailable as error:
        return {"skipped": f"no local control plane: {error}"}
    try:
        started = time.monotonic()
        version = plane.server_version()
        plane.apply(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": NAMESPACE},
                },
            ]
        )
        pods = [f"bench-{index}" for index in range(threads + 1)]
        plane.apply([_pod_manifest(name) for name in pods])
        core = client.CoreV1Api(plane.api_client())

        def make_core() -> Any:
            return client.CoreV1Api(plane.api_client())

        with (
            http_server(work_dir, cert_dir) as server,
            floor_server(work_dir, cert_dir) as floor,
        ):
            urls = {"webhook": server.url, **({"floor": floor.url} if floor else {})}
            configs = tuple(config for config in CONFIGS if config != "floor" or floor)
            admission = _Admission(plane, core, urls, issued.ca_bundle)
            control_pids = [process.pid for process in getattr(plane, "processes", [])]

            def cpu_now() -> dict[str, float]:
                """CPU seconds so far: etcd + kube-apiserver, the webhook, this client."""
                return {
                    "control_plane": sum(cpu_seconds(pid) for pid in control_pids),
                    # whichever webhook is in force: the other one is idle
                    "webhook": tree_cpu_seconds(server.pid)
                    + (tree_cpu_seconds(floor.pid) if floor else 0.0),
                    "client": cpu_seconds(os.getpid()),
                }

            samples: dict[str, dict[str, list[dict[str, Any]]]] = {
                config: {"sequential": [], "concurrent": []} for config in configs
            }
            for round_index in range(rounds):
                shift = round_index % len(configs)
                order = configs[shift:] + configs[:shift]
                for config in order:
                    admission.use(config)
                    _latencies_sequential(core, pods[0], 20, f"warm-{config}")
                    cpu_before = cpu_now()
                    seq = _latencies_sequential(core, pods[0], sequential, f"{config}{round_index}")
                    conc, elapsed = _latencies_concurrent(
                        make_core, pods[1:], per_thread, f"{config}{round_index}"
                    )
                    cpu_after = cpu_now()
                    count = len(seq) + len(conc)
                    cpu = {
                        f"{name}_cpu_ms_per_request": rounded(
                            (cpu_after[name] - cpu_before[name]) * 1000 / count
                        )
                        for name in cpu_before
                    }
                    samples[config]["sequential"].append({**_stats(seq), **cpu})
                    samples[config]["concurrent"].append(
                        {**_stats(conc), "rps": rounded(len(conc) / elapsed, 1)}
                    )
                    log(
                        f"apiserver: {config:7s} sequential p50 {_stats(seq)['p50_ms']:.2f} ms "
                        f"p99 {_stats(seq)['p99_ms']:.2f} ms; {threads} threads p50 "
                        f"{_stats(conc)['p50_ms']:.2f} ms p99 {_stats(conc)['p99_ms']:.2f} ms"
                    )
            admission.use("none")
        elapsed_total = time.monotonic() - started
    finally:
        plane_context.__exit__(None, None, None)

    def med(config: str, kind: str, key: str) -> float:
        return rounded(median(float(item[key]) for item in samples[config][kind]))

    def added(config: str, kind: str, key: str) -> float:
        # per round, then the median: the three configurations ran minutes apart at most
        pairs = zip(samples[config][kind], samples["none"][kind], strict=True)
        return rounded(median(float(a[key]) - float(b[key]) for a, b in pairs))

    def ratio_to_vap(kind: str, key: str) -> float:
        pairs = zip(samples["webhook"][kind], samples["vap"][kind], strict=True)
        return rounded(median(ratio(float(a[key]), float(b[key])) for a, b in pairs))

    table = {
        config: {
            kind: {
                key: med(config, kind, key)
                for key in samples[config][kind][0]
                if key not in ("count",)
            }
            for kind in ("sequential", "concurrent")
        }
        for config in configs
    }

    def floor_ratio(key: str) -> float | None:
        """Our added latency over the floor's; None when what the floor adds is under a
        tenth of the latency without admission: then it is lost in the run's noise (a
        p99 moves more than that between rounds on a busy machine) and a ratio to it
        says nothing."""
        floor_added = added("floor", "sequential", key)
        if not floor_added > 0.1 * med("none", "sequential", key):
            return None
        return rounded(added("webhook", "sequential", key) / floor_added)

    floor_figures: dict[str, Any] = {}
    if "floor" in samples:
        floor_figures = {
            "floor_added_p50_ms": added("floor", "sequential", "p50_ms"),
            "floor_added_p99_ms": added("floor", "sequential", "p99_ms"),
            "ratio_vs_floor_p50": floor_ratio("p50_ms"),
            "ratio_vs_floor_p99": floor_ratio("p99_ms"),
            "concurrent_floor_added_p50_ms": added("floor", "concurrent", "p50_ms"),
            "concurrent_floor_added_p99_ms": added("floor", "concurrent", "p99_ms"),
        }
    return {
        "added_p50_ms": added("webhook", "sequential", "p50_ms"),
        "added_p99_ms": added("webhook", "sequential", "p99_ms"),
        "ratio_vs_vap": ratio_to_vap("sequential", "p50_ms"),
        "ratio_vs_vap_p99": ratio_to_vap("sequential", "p99_ms"),
        "vap_added_p50_ms": added("vap", "sequential", "p50_ms"),
        "vap_added_p99_ms": added("vap", "sequential", "p99_ms"),
        "vap_minimal_added_p50_ms": added("vap_minimal", "sequential", "p50_ms"),
        "vap_minimal_added_p99_ms": added("vap_minimal", "sequential", "p99_ms"),
        "concurrent_added_p50_ms": added("webhook", "concurrent", "p50_ms"),
        "concurrent_added_p99_ms": added("webhook", "concurrent", "p99_ms"),
        "concurrent_vap_added_p50_ms": added("vap", "concurrent", "p50_ms"),
        **floor_figures,
        "cpu_ms_per_request": {
            config: {
                name: table[config]["sequential"].get(f"{name}_cpu_ms_per_request")
                for name in ("control_plane", "webhook", "client")
            }
            for config in configs
        },
        "table": table,
        "rounds": rounds,
        "sequential_per_round": sequential,
        "concurrent_threads": threads,
        "concurrent_per_thread": per_thread,
        "kubernetes": version,
        "review_bytes_approx": len(
            payloads.encoded({"o": _pod_manifest("bench-0"), "n": _pod_manifest("bench-0")})
        ),
        "seconds": round(elapsed_total, 1),
        "samples": samples,
    }


@contextlib.contextmanager
def http_server(work_dir: Path, cert_dir: Path) -> Iterator[servers.RunningServer]:
    server = servers.start(servers.WEBHOOK, work_dir, cert_dir)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def floor_server(work_dir: Path, cert_dir: Path) -> Iterator[servers.RunningServer | None]:
    """The Go floor, or None (logged) when there is no Go toolchain to build it."""
    try:
        server = servers.start(servers.GO_FLOOR, work_dir, cert_dir)
    except servers.GoUnavailable as error:
        log(f"apiserver: no Go floor ({error})")
        yield None
        return
    try:
        yield server
    finally:
        server.stop()
