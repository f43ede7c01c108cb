"""The DAG parses in a real DagBag and only orchestrates."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dag_imports_and_chains_every_stage(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["wiki_topics"]
    order = ["fetch", "ingest", "graph", "label", "wit", "shard", "embed", "train", "infer", "report"]
    assert sorted(dag.task_ids) == sorted(order + ["resolve_dump"])
    for up, down in zip(order, order[1:]):  # the product's order still holds, now derived from the records
        assert up in dag.get_task(down).get_flat_relative_ids(upstream=True), (up, down)
    # the dump date is resolved once and handed to every stage
    assert dag.get_task("resolve_dump").downstream_task_ids == set(order)
    assert set(dag.params.keys()) >= {"dump_date", "taxonomy", "heuristics", "force"}
    # a dump whose every stage is up to date short-circuits the whole run
    assert dag.get_task("resolve_dump").task_type.startswith("_ShortCircuit")


def test_dag_operations_pools_timeouts_and_assets(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import AssetAlias

    from pipeline.orchestration.operator import StageOperator

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["wiki_topics"]
    stages = ["fetch", "ingest", "graph", "label", "wit", "shard", "embed", "train", "infer", "report"]
    for stage in stages:
        task = dag.get_task(stage)
        assert isinstance(task, StageOperator) and task.stage == stage
        assert task.execution_timeout is not None and task.execution_timeout.total_seconds() >= 3600
        # each stage adds its output's exact URI to an alias downstream DAGs can be scheduled on
        assert task.outlets == [AssetAlias(name=f"wiki_image_topics.{stage}")]
        gpu = stage in ("embed", "train", "infer")
        assert (task.pool == "gpu") == gpu and (task.queue == "gpu") == gpu, stage
    # inference uses the version the gate left as champion, not the model just trained
    assert dag.get_task("infer").taken == {"tracking.model_uri": "{{ ti.xcom_pull(task_ids='train')['champion_uri'] }}"}
    assert dag.get_task("resolve_dump").execution_timeout is not None


def test_dag_holds_no_business_logic():
    """Only imports of the launcher and Airflow; no Spark, Keras or pandas in dags/."""
    tree = ast.parse((ROOT / "dags" / "wiki_topics.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m and m.split(".")[0] in {"pyspark", "keras", "tensorflow", "pandas", "spark_jobs", "training"}}


def test_dag_dependencies_are_the_records(monkeypatch, tmp_path):
    """Each stage task waits for exactly its record's upstream stages and those it takes a setting from,
    plus the task that resolves the dump date: nothing hand-written in the DAG."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    from pipeline.orchestration.stages import STAGES

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["wiki_topics"]
    for name, stage in STAGES.items():
        assert dag.get_task(name).upstream_task_ids == {"resolve_dump", *stage.needs}, name
        assert dag.get_task(name).execution_timeout == stage.timeout
    assert STAGES["infer"].needs == ("shard", "train") and STAGES["wit"].needs == ("fetch", "label")
    assert STAGES["train"].needs == ("shard", "embed") and STAGES["embed"].needs == ("shard",)
