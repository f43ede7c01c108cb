# One image for every service of docker-compose.yml (Airflow, Spark master/workers, MLflow),
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
COPY pipeline/ pipeline/
COPY spark_jobs/ spark_jobs/
COPY training/ training/
COPY dags/ dags/
ENV PYTHONPATH=/opt/wiki-image-topics \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/usr/local/bin/python
ENTRYPOINT ["/usr/bin/tini", "--"]
