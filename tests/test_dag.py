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
    order = ["fetch", "ingest", "graph", "label", "wit", "shard", "train", "infer", "report"]
    assert sorted(dag.task_ids) == sorted(order + ["resolve_dump"])
    for up, down in zip(order, order[1:]):
        assert down in dag.get_task(up).downstream_task_ids
    # the dump date is resolved once and handed to every stage
    assert dag.get_task("resolve_dump").downstream_task_ids == set(order)
    assert set(dag.params.keys()) >= {"dump_date", "taxonomy", "heuristics", "force"}
    # a dump already processed with the same settings short-circuits the whole run
    assert dag.get_task("resolve_dump").task_type.startswith("_ShortCircuit")
    assert all(dag.get_task(t).outlets for t in order)  # every stage updates an asset


def test_dag_holds_no_business_logic():
    """Only imports of the launcher and Airflow; no Spark, Keras or pandas in dags/."""
    tree = ast.parse((ROOT / "dags" / "wiki_topics.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m and m.split(".")[0] in {"pyspark", "keras", "tensorflow", "pandas", "spark_jobs", "training"}}
