"""Locust load for a model server: each user sends one image per request, back to back.

As Lift Wing's services keep one. ``TARGET`` picks the protocol: ``kserve``
(this product's ``/v1/models/<name>:predict``) or ``mlflow`` (``mlflow models
serve``'s ``/invocations`` with ``dataframe_records``). ``IMAGES`` is a JSON
file of base64 images; users take them in turn. Used by
``benchmarks/serve_benchmark.py``; runs on its own too:

    IMAGES=images.json TARGET=kserve locust -f benchmarks/serve_locustfile.py --host http://127.0.0.1:8080
"""

from __future__ import annotations

import itertools
import json
import os

from locust import FastHttpUser, constant, task

TARGET = os.environ.get("TARGET", "kserve")
MODEL = os.environ.get("MODEL_NAME", "wiki-image-topics")
TOKEN = os.environ.get("TOKEN", "")
with open(os.environ["IMAGES"], encoding="utf-8") as f:
    IMAGES = json.load(f)
_next = itertools.cycle(range(len(IMAGES)))


class OneImage(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        image = IMAGES[next(_next)]
        headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
        if TARGET == "kserve":
            path, body = f"/v1/models/{MODEL}:predict", {"instances": [{"image": image}]}
        else:
            path, body = "/invocations", {"dataframe_records": [{"image": image}]}
        with self.client.post(path, json=body, headers=headers, name=TARGET, catch_response=True) as r:
            if r.status_code != 200 or "predictions" not in (r.text or ""):
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
