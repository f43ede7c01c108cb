# The model server's image (docker-compose.yml's `model-server`): its own environment, as each Lift
# Wing service has its own image. requirements-serve.lock (KServe, TensorFlow CPU, MLflow's client),
# and only the code a model needs (pipeline/, training/); no Airflow, no Spark, no JVM.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /opt/wiki-image-topics
COPY requirements-serve.lock .
# Behind a TLS-intercepting proxy, pass its CA bundle as the build secret `ca_bundle` (not kept in the image).
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir -r requirements-serve.lock
RUN useradd --uid 50000 --gid 0 --home-dir /home/server --create-home server
COPY pipeline/ pipeline/
COPY training/ training/
COPY serving/ serving/
ENV PYTHONPATH=/opt/wiki-image-topics \
    KERAS_HOME=/tmp/keras
USER 50000
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "serving", "--host", "0.0.0.0"]
