"""pod-replace-guard: a validating admission webhook for the pod replace rules."""

__version__ = "0.1.0"
