"""The model server: the champion answers for one image on request, as ORES (Lift Wing) answers for an edit.

``python -m serving`` runs it (KServe's Python SDK, V1 and V2
protocols) in its own environment (``requirements-serve.txt``): it imports the
model's code (``pipeline.features.imaging``, ``pipeline.features.texts``, ``training.pyfunc``) and
never Airflow or Spark.

- ``instances``: a request's instances, checked, each error naming the instance;
- ``thumbnails``: a Commons file title to the bytes the image store would keep, fetched politely and cached;
- ``champion``: the served model, following its alias and swapping in a new version when it is ready;
- ``batcher``: instances from concurrent requests predicted as one batch;
- ``server``: the KServe model, the HTTP app around it (page, token, body limit) and ``main``.
"""
