"""3. API-server level: pod UPDATE latency through a real kube-apiserver.

The local control plane of the end-to-end suite (etcd + kube-apiserver v1.34 on
loopback, ``tests.e2e.cluster.local_control_plane``) serves label patches of pods
(merge patches: an UPDATE for admission) sent with the official Python client, in
five configurations, side by side: each has its own namespace (labelled
``prg-bench=<configuration>``) and only that namespace's pods are judged by it:

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

The webhook configurations and policy bindings differ from the shipped ones only by
that namespace condition. Each configuration is checked to be in force in its
namespace before anything is measured (a dry-run finalizer patch is denied by the
expected webhook or policy, or allowed for ``none``).

The calls take turns: one call per configuration, in an order that rotates, then the
next, so every configuration sees the same machine at the same moment and the
differences between them (what each adds) are not the drift of a shared machine
between minutes. Latency is measured in the client around each call (the response is
read but not turned into model objects, so the client's own cost stays small and
equal across configurations): calls one after another, then a few threads at once,
each with its own pods and client. CPU per request is measured apart, each
configuration alone for a while (the control plane's CPU cannot be told apart
otherwise). The pods are realistic Deployment-like pods (3 containers), so each review
is ~15 KB.
"""

from __future__ import annotations

import contextlib
import copy
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

BENCH_LABEL = "prg-bench"
# The API server the figures are measured on: the release benchmarks/vap.yaml (the
# packaged policy, the variant for 1.33 and later) is generated from, not the local
# plane's default (the oldest supported release, where that variant does not compile).
# K8S_VERSION chooses another (1.33 or later).
KUBERNETES = os.environ.get("K8S_VERSION") or "1.34.4"
# configuration -> (manifest, policy name)
POLICIES = {
    "vap": (REPO / "benchmarks" / "vap.yaml", POLICY_NAME),
    "vap_minimal": (REPO / "benchmarks" / "vap-minimal.yaml", "pod-replace-guard-cel-minimal"),
}
WEBHOOKS = ("webhook", "floor")
PROBE = {"metadata": {"finalizers": ["bench.example.com/probe"]}}
CONFIGS = ("none", "webhook", "vap", "vap_minimal", "floor")
# The Go floor's answer to the probe (benchmarks/gofloor/main.go DenyMessage).
FLOOR_DENIAL = "gofloor: probe denied"


def namespace_of(config: str) -> str:
    return "bench-" + config.replace("_", "-")


def _pod_manifest(name: str, namespace: str) -> dict[str, Any]:
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
            "namespace": namespace,
            "labels": metadata["labels"],
            "annotations": metadata["annotations"],
            "ownerReferences": metadata["ownerReferences"],
        },
        "spec": spec,
    }


Target = tuple[str, str]  # (configuration, pod)


def _patch(core: Any, config: str, pod: str, tag: str) -> float:
    """One label patch of ``pod`` in ``config``'s namespace; milliseconds."""
    body = {"metadata": {"labels": {"bench-seq": tag}}}
    started = time.perf_counter()
    response = core.patch_namespaced_pod(pod, namespace_of(config), body, _preload_content=False)
    response.read()  # the whole answer, as a client reads it
    response.release_conn()
    return (time.perf_counter() - started) * 1000


def _latencies_in_turn(
    core: Any, configs: tuple[str, ...], pod: str, count: int, tag: str
) -> dict[str, list[float]]:
    """``count`` calls per configuration, one of each in turn (the order rotating)."""
    values: dict[str, list[float]] = {config: [] for config in configs}
    for index in range(count):
        shift = index % len(configs)
        for config in configs[shift:] + configs[:shift]:
            values[config].append(_patch(core, config, pod, f"{tag}-{index}"))
    return values


def _latencies_concurrent(
    make_core: Callable[[], Any], configs: tuple[str, ...], pods: list[str], count: int, tag: str
) -> tuple[dict[str, list[float]], float]:
    results: list[dict[str, list[float]]] = [{} for _ in pods]
    errors: list[BaseException] = []
    cores = [make_core() for _ in pods]
    barrier = threading.Barrier(len(pods) + 1)

    def work(slot: int) -> None:
        try:
            barrier.wait()
            results[slot] = _latencies_in_turn(
                cores[slot], configs, pods[slot], count, f"{tag}-{slot}"
            )
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
    merged = {config: [v for chunk in results for v in chunk[config]] for config in configs}
    return merged, elapsed


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": rounded(percentile(values, 0.50)),
        "p90_ms": rounded(percentile(values, 0.90)),
        "p99_ms": rounded(percentile(values, 0.99)),
        "mean_ms": rounded(sum(values) / len(values)),
    }


class _Admission:
    """Installs every configuration, each bound to its own namespace, and checks that
    each is in force there."""

    def __init__(self, plane: Any, core: Any, urls: dict[str, str], ca_bundle: str) -> None:
        self.plane = plane
        self.core = core
        self.urls = urls  # configuration -> the url of its webhook
        self.ca_bundle = ca_bundle

    def _probe(self, config: str) -> str:
        """Which admission answers a finalizer added in ``config``'s namespace."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.patch_namespaced_pod(
                "bench-0", namespace_of(config), PROBE, dry_run="All", _preload_content=False
            )
            response.read()
        except ApiException as error:
            text = str(error.body or "")
            for policy, (_, name) in POLICIES.items():
                if f"ValidatingAdmissionPolicy '{name}'" in text:
                    return policy
            if FLOOR_DENIAL in text:
                return "floor"
            if "admission webhook" in text and "denied the request" in text:
                return "webhook"
            return f"error {error.status}: {text[:200]}"
        return "none"

    def install(self, configs: tuple[str, ...], timeout: float = 60.0) -> None:
        import yaml

        from tests.e2e.cluster import webhook_configuration

        only_here = {"key": BENCH_LABEL, "operator": "In"}
        documents: list[dict[str, Any]] = []
        for config in configs:
            if config in WEBHOOKS:
                hooks = copy.deepcopy(webhook_configuration(self.plane))
                hooks["metadata"]["name"] += f"-bench-{namespace_of(config)}"
                for hook in hooks["webhooks"]:
                    hook["clientConfig"] = {"url": self.urls[config], "caBundle": self.ca_bundle}
                    hook["failurePolicy"] = "Fail"
                    selector = hook.setdefault("namespaceSelector", {})
                    selector.setdefault("matchExpressions", []).append(
                        {**only_here, "values": [config]}
                    )
                documents.append(hooks)
            elif config in POLICIES:
                for document in yaml.safe_load_all(POLICIES[config][0].read_text()):
                    if document and document["kind"] == "ValidatingAdmissionPolicyBinding":
                        document["spec"].setdefault("matchResources", {})["namespaceSelector"] = {
                            "matchExpressions": [{**only_here, "values": [config]}]
                        }
                    if document:
                        documents.append(document)
        self.plane.apply(documents)
        deadline = time.monotonic() + timeout
        waiting = list(configs)
        seen: dict[str, str] = {}
        while waiting and time.monotonic() < deadline:
            for config in list(waiting):
                seen[config] = self._probe(config)
                if seen[config] == config:
                    waiting.remove(config)
            time.sleep(0.2)
        if waiting:
            raise TimeoutError(f"admission configurations not in force: {seen}")
        # The informers of every API server goroutine have caught up once the probes
        # see the change; give stragglers a moment.
        time.sleep(0.5)


@contextlib.contextmanager
def _control_plane(work_dir: Path) -> Iterator[Any]:
    from tests.e2e.cluster import local_control_plane

    with local_control_plane(work_dir / "controlplane", KUBERNETES) as plane:
        yield plane


def run(work_dir: Path) -> dict[str, Any]:
    short = quick()
    rounds = 1 if short else 3
    sequential = 150 if short else 600
    threads = 4
    per_thread = 40 if short else 150
    alone = 100 if short else 300
    try:
        from kubernetes import client

        from tests.e2e.cluster import ControlPlaneUnavailable
    except ImportError as error:  # the e2e support is not there
        return {"skipped": f"tests.e2e.cluster is not importable: {error}"}

    log(
        f"apiserver: {len(CONFIGS)} configurations side by side, {rounds} round(s) of "
        f"{sequential} sequential label patches each in turn, then {threads} threads x "
        f"{per_thread} each; CPU: {alone} patches per configuration alone"
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
        pods = [f"bench-{index}" for index in range(threads + 1)]
        for config in CONFIGS:
            namespace = namespace_of(config)
            plane.apply(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": namespace, "labels": {BENCH_LABEL: config}},
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": "default", "namespace": namespace},
                    },
                ]
            )
            plane.apply([_pod_manifest(name, namespace) for name in pods])
        core = client.CoreV1Api(plane.api_client())

        def make_core() -> Any:
            return client.CoreV1Api(plane.api_client())

        with (
            http_server(work_dir, cert_dir) as server,
            floor_server(work_dir, cert_dir) as floor,
        ):
            urls = {"webhook": server.url, **({"floor": floor.url} if floor else {})}
            configs = tuple(config for config in CONFIGS if config != "floor" or floor)
            _Admission(plane, core, urls, issued.ca_bundle).install(configs)
            control_pids = [process.pid for process in getattr(plane, "processes", [])]
            webhook_pids = {"webhook": server.pid, **({"floor": floor.pid} if floor else {})}

            def cpu_now() -> dict[str, float]:
                """CPU seconds so far: etcd + kube-apiserver, the webhooks, this client."""
                return {
                    "control_plane": sum(cpu_seconds(pid) for pid in control_pids),
                    "webhook": sum(tree_cpu_seconds(pid) for pid in webhook_pids.values()),
                    "client": cpu_seconds(os.getpid()),
                }

            _latencies_in_turn(core, configs, pods[0], 20, "warm")
            samples: dict[str, dict[str, list[dict[str, Any]]]] = {
                config: {"sequential": [], "concurrent": []} for config in configs
            }
            for round_index in range(rounds):
                seq = _latencies_in_turn(core, configs, pods[0], sequential, f"s{round_index}")
                conc, elapsed = _latencies_concurrent(
                    make_core, configs, pods[1:], per_thread, f"c{round_index}"
                )
                for config in configs:
                    samples[config]["sequential"].append(_stats(seq[config]))
                    samples[config]["concurrent"].append(
                        {
                            **_stats(conc[config]),
                            "rps_all_configurations": rounded(
                                sum(len(v) for v in conc.values()) / elapsed, 1
                            ),
                        }
                    )
                log(
                    f"apiserver: round {round_index + 1}: sequential p50/p99 ms "
                    + ", ".join(
                        f"{config} {_stats(seq[config])['p50_ms']:.2f}/"
                        f"{_stats(seq[config])['p99_ms']:.2f}"
                        for config in configs
                    )
                )
            cpu: dict[str, dict[str, float]] = {}
            for config in configs:
                before = cpu_now()
                _latencies_in_turn(core, (config,), pods[0], alone, "cpu")
                after = cpu_now()
                cpu[config] = {
                    name: rounded((after[name] - before[name]) * 1000 / alone) for name in before
                }
        elapsed_total = time.monotonic() - started
    finally:
        plane_context.__exit__(None, None, None)

    def med(config: str, kind: str, key: str) -> float:
        return rounded(median(float(item[key]) for item in samples[config][kind]))

    def added(config: str, kind: str, key: str) -> float:
        # per round (the configurations took turns call by call), then the median
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
        tenth of the latency without admission: then it is lost in the run's noise and
        a ratio to it says nothing."""
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
        "method": "side by side: one namespace per configuration, calls in turn",
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
        "cpu_ms_per_request": cpu,
        "table": table,
        "rounds": rounds,
        "sequential_per_round": sequential,
        "concurrent_threads": threads,
        "concurrent_per_thread": per_thread,
        "cpu_calls_alone": alone,
        "kubernetes": version,
        "review_bytes_approx": len(
            payloads.encoded(
                {"o": _pod_manifest("bench-0", "x"), "n": _pod_manifest("bench-0", "x")}
            )
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
