# One image for every service of docker-compose.yml (Airflow, Spark master/workers, MLflow;
# the GPU worker's differs only in its TensorFlow build),
# so Spark executors run the same Python and the same pinned packages as the driver.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONUNBUFFERED=1 \
    PROJECT_ROOT=/opt/wiki-image-topics
WORKDIR /opt/wiki-image-topics
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
# The GPU worker's image swaps the CPU build of TensorFlow for the CUDA one:
# --build-arg TENSORFLOW="tensorflow[and-cuda]==2.21.0" (docker-compose.yml's airflow-worker-gpu).
ARG TENSORFLOW=""
RUN if [ -n "$TENSORFLOW" ]; then pip uninstall -y tensorflow-cpu && pip install --no-cache-dir "$TENSORFLOW"; fi
COPY pipeline/ pipeline/
COPY spark_jobs/ spark_jobs/
COPY training/ training/
COPY dags/ dags/
COPY docker/ docker/
ENV PYTHONPATH=/opt/wiki-image-topics \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/usr/local/bin/python \
    SPARK_CLASS_ARCHIVE=/opt/spark-classes.jsa
# Every stage task starts a Spark driver JVM; with Spark's classes archived it starts faster.
RUN python -m pipeline spark-archive --out "$SPARK_CLASS_ARCHIVE"
ENTRYPOINT ["/usr/bin/tini", "--"]
