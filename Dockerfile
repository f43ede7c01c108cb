# One image for every service of docker-compose.yml (Airflow, Spark master/workers, MLflow;
# the GPU worker's differs only in its TensorFlow build),
# so Spark executors run the same Python and the same pinned packages as the driver.
#
# BASE_IMAGE: any Debian bookworm image with python3 and its venv module; the official Python image
# by default. Where Docker Hub cannot be reached, docker/standins.sh builds one from Debian's
# packages. The project's packages go into a venv of their own (/opt/venv), so the image is the
# same whichever Python layout the base has.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONUNBUFFERED=1 \
    PROJECT_ROOT=/opt/wiki-image-topics \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /opt/wiki-image-topics
COPY requirements.lock .
# Behind a TLS-intercepting proxy, pass its CA bundle as the build secret `ca_bundle`
# (docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt); it is not kept in the image.
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir -r requirements.lock
# The GPU worker's image swaps the CPU build of TensorFlow for the CUDA one:
# --build-arg TENSORFLOW="tensorflow[and-cuda]==2.21.0" (docker-compose.yml's airflow-worker-gpu).
ARG TENSORFLOW=""
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && if [ -n "$TENSORFLOW" ]; then pip uninstall -y tensorflow-cpu && pip install --no-cache-dir "$TENSORFLOW"; fi
# SPARK_HOME by a fixed path, whatever the venv's Python version.
RUN ln -s "$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" /opt/spark
# A non-root user for every service, as the official Airflow image has (uid 50000, group 0);
# /data is where the compose file mounts the lake volume, which takes this ownership when created.
RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home airflow \
 && mkdir -p /data /opt/airflow/logs && chown -R 50000:0 /data /opt/airflow
COPY pipeline/ pipeline/
COPY spark_jobs/ spark_jobs/
COPY training/ training/
COPY dags/ dags/
COPY docker/ docker/
ENV PYTHONPATH=/opt/wiki-image-topics \
    SPARK_HOME=/opt/spark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    SPARK_CLASS_ARCHIVE=/opt/spark-classes.jsa \
    AIRFLOW_HOME=/opt/airflow
# Every stage task starts a Spark driver JVM; with Spark's classes archived it starts faster.
RUN python -m pipeline spark-archive --out "$SPARK_CLASS_ARCHIVE"
USER 50000
ENTRYPOINT ["/usr/bin/tini", "--"]
