#!/usr/bin/env bash
# The kind flow's subset of the upstream [Conformance] specs (hack/kind/test.sh, after
# the deploy; the kind workflow), on the cluster $CLUSTER with the webhook enforcing.
# make conformance runs all of them, with and without the webhook; this is the part that
# fits the CI's time (10 specs, about 1 minute): pod updates the webhook allows (labels,
# activeDeadlineSeconds, status), the controllers' adoption and release of pods
# (ownerReferences changed by the exempt controller identities), a rolling update, the
# job controller's tracking finalizers, an eviction under a PodDisruptionBudget. The e2e test binary is built by hack/prebuild.sh
# while the first suite runs. Any failure fails the flow: run.sh prints ginkgo's summary
# of the failures (and test.sh's finish trap the cluster's state).
source "$(dirname "$0")/../lib.sh"
export CONFORMANCE_OUT=${CONFORMANCE_OUT:-$KIND_CACHE/conformance-$CLUSTER}

# Ginkgo focus; each spec also carries the Conformance label.
focus='\[sig-node\] Pods should (be updated|allow activeDeadlineSeconds to be updated|patch a pod status|run through the lifecycle of Pods and PodStatus) '\
'|\[sig-apps\] ReplicaSet should adopt matching pods on creation and release no longer matching pods '\
'|\[sig-apps\] ReplicationController should (adopt matching pods on creation|release no longer matching pods) '\
'|\[sig-apps\] Deployment RollingUpdateDeployment should delete old pods and create new ones '\
'|\[sig-apps\] Job should manage the lifecycle of a job '\
'|\[sig-apps\] DisruptionController should block an eviction until the PDB is updated to allow it '

timed conformance-build "$HACK_KIND/conformance/build.sh" >/dev/null
timed conformance-images "$HACK_KIND/conformance/images.sh" >/dev/null
CONFORMANCE_FOCUS=$focus CONFORMANCE_PROCS=2 CONFORMANCE_TIMEOUT=10m \
  "$HACK_KIND/conformance/run.sh" webhook ci-subset
# And the one spec the seed's rules refuse on purpose (refusals.txt, docs/reliability.md):
# the test itself, as a user, sets a Job pod's ownerReferences to nil. run.sh accepts its
# failure only on the webhook's denial of exactly that field, and it must be refused:
# the webhook was enforcing during the subset.
log "conformance: the deliberate refusal"
summary=$(CONFORMANCE_FOCUS='\[sig-apps\] Job should adopt matching orphans and release non-matching pods ' \
  CONFORMANCE_PROCS=1 CONFORMANCE_TIMEOUT=5m "$HACK_KIND/conformance/run.sh" webhook ci-refusal)
printf '%s\n' "$summary"
grep -q '^  refused (deliberate) \[sig-apps\] Job should adopt matching orphans' <<<"$summary" ||
  die "the Job adoption spec was not refused: the webhook did not deny its change of metadata.ownerReferences (see $CONFORMANCE_OUT/ci-refusal/e2e.log)"
