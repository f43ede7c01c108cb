"""Development tooling, apart from the product: the sample generator and the local servers that stand
in for Wikimedia and WIT, the demo, a local Spark cluster and synthetic training data.

Nothing in ``pipeline``, ``spark_jobs``, ``training`` or ``dags`` imports it, and it ships neither to
Spark executors nor into the Docker images. ``python -m devtools --help`` lists its commands.
"""
