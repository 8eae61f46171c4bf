"""The framework ceiling: a Flask app that allows every review without looking at it.

It reads the request body off the socket (the server has to, for any handler) but
neither parses nor judges it, logs nothing and keeps no metrics; its answer is a fixed
AdmissionReview. Served with the production gunicorn options and per-worker certificate reloader by
:mod:`benchmarks.launcher`, the difference between it and the webhook is what judging
costs.
"""

from __future__ import annotations

from flask import Flask, Response, request

ALLOWED = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
    b'"response":{"uid":"","allowed":true}}'
)


def create_allow_all_app() -> Flask:
    app = Flask("allow_all")

    @app.post("/validate")
    def validate() -> Response:
        request.get_data(cache=False)
        return Response(ALLOWED, mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app
