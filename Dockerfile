# pod-replace-guard: the admission webhook image (make image).
#
# Two stages: the build stage installs the package and its serving dependencies
# with the `live` extra (the kubernetes client, for the `controller` container; no dev
# extra) into a virtual environment; the final stage is the same slim Python
# with only that environment copied in, running as an unprivileged numeric user.
# The entry point is the console script in exec form: no shell is used at run time.
# `serve` runs gunicorn in-process with the committed configuration
# (webhook/gunicorn_app.py); settings come from PRG_* variables (deploy/README.md).
#
# No `# syntax=` line on purpose: BuildKit would pull that frontend image from a
# registry, which an air-gapped build cannot reach.
#
# Air-gapped builds (docs/kind.md): PYTHON_IMAGE names a local base with python3 and its
# venv module (hack/kind/rootfs.sh python builds one from Debian packages), and
# `--build-arg PIP_NO_INDEX=1` makes pip install only from wheelhouse/, which
# hack/wheelhouse.sh fills on a machine that reaches a package index. Without those
# arguments pip uses the index as usual and wheelhouse/ holds only its README.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_FIND_LINKS=/wheelhouse
RUN python3 -m venv /opt/pod-replace-guard
ENV PATH=/opt/pod-replace-guard/bin:$PATH
WORKDIR /src
# Only what the package build needs (see .dockerignore).
COPY pyproject.toml README.md ./
COPY wheelhouse/ /wheelhouse/
COPY webhook ./webhook
# A regular (not editable) install of the runtime dependencies, byte-compiled now
# because the root filesystem is read-only at run time. pip itself is not needed
# after this, so it is removed from the environment. The last lines check, outside the
# source tree, that the installed package and its console script work.
RUN pip install --no-cache-dir ".[live]" \
 && python3 -m pip uninstall --yes pip \
 && cd / \
 && python3 -c "import webhook.cli, webhook.app, webhook.gunicorn_app, webhook.tls, webhook.serving.worker, webhook.controller, kubernetes.client" \
 && pod-replace-guard --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pod-replace-guard" \
      org.opencontainers.image.description="Kubernetes validating admission webhook: pods may be replaced only in the ways the Replace Pod API permits" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/pod-replace-guard /opt/pod-replace-guard
ENV PATH=/opt/pod-replace-guard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PRG_CERT_DIR=/etc/pod-replace-guard/tls \
    PRG_BIND=0.0.0.0:8443 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics
# 65532: the conventional "nonroot" uid/gid; numeric, so runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443
ENTRYPOINT ["pod-replace-guard"]
CMD ["serve"]
