"""The champion quality gate, with a real MLflow SQLite store per test."""

import mlflow
import mlflow.pyfunc
import pytest

from pipeline import tracking
from pipeline.config import load_settings
from training import registry


class ConstantModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture()
def settings(tmp_path):
    s = load_settings({"paths.state_dir": str(tmp_path / "state")}, environ={})
    tracking.configure(s)
    return s


def _finished_run(auc: float, status: str = "FINISHED") -> tuple[str, str]:
    """A run that logged a (trivial) model and a test AUC, ended with ``status``."""
    run = mlflow.start_run()
    info = mlflow.pyfunc.log_model(name="model", python_model=ConstantModel(), pip_requirements=[])
    mlflow.log_metric(registry.TAG_AUC, auc)
    mlflow.end_run(status=status)
    return run.info.run_id, info.model_uri


def _aliases(settings):
    c = tracking.client(settings)
    return {a: str(v) for a, v in c.get_registered_model(settings.tracking.model_name).aliases.items()}


def test_gate(settings):
    fp = registry.test_fingerprint(["b", "a", "c"])
    assert fp == registry.test_fingerprint(["c", "b", "a"])  # order-independent

    r1 = registry.register_and_promote(settings, *_finished_run(0.5), 0.5, fp)
    assert r1["promoted"] and r1["reason"] == "no champion yet"
    assert r1["model_uri"] == f"models:/{settings.tracking.model_name}/1"
    assert sorted(r1["aliases"]) == ["challenger", "champion"]

    worse = registry.register_and_promote(settings, *_finished_run(0.4), 0.4, fp)
    assert not worse["promoted"] and "0.4000 <" in worse["reason"]
    assert _aliases(settings) == {"champion": "1", "challenger": "2"}
    assert worse["aliases"] == ["challenger"]

    equal = registry.register_and_promote(settings, *_finished_run(0.5), 0.5, fp)
    assert equal["promoted"]  # ties go to the newer model
    assert _aliases(settings) == {"champion": "3", "challenger": "3"}

    better = registry.register_and_promote(settings, *_finished_run(0.7), 0.7, fp)
    assert better["promoted"] and better["champion_before"] == "3"
    assert _aliases(settings) == {"champion": "4", "challenger": "4"}

    other_split = registry.register_and_promote(settings, *_finished_run(0.99), 0.99, "ffffffffffffffff")
    assert not other_split["promoted"] and "different test split" in other_split["reason"]
    assert _aliases(settings) == {"champion": "4", "challenger": "5"}

    c = tracking.client(settings)
    mv = c.get_model_version(settings.tracking.model_name, "4")
    assert float(mv.tags[registry.TAG_AUC]) == 0.7 and mv.tags[registry.TAG_FINGERPRINT] == fp
    assert "promotion" in mv.tags


def test_failed_run_never_moves_an_alias(settings):
    fp = registry.test_fingerprint(["k1", "k2"])
    registry.register_and_promote(settings, *_finished_run(0.3), 0.3, fp)
    run_id, uri = _finished_run(0.9, status="FAILED")
    with pytest.raises(RuntimeError, match="FAILED"):
        registry.register_and_promote(settings, run_id, uri, 0.9, fp)
    assert _aliases(settings) == {"champion": "1", "challenger": "1"}
    assert len(tracking.client(settings).search_model_versions(f"name='{settings.tracking.model_name}'")) == 1


def test_nan_auc_is_never_champion(settings):
    r = registry.register_and_promote(settings, *_finished_run(0.0), float("nan"), "x")
    assert not r["promoted"] and r["aliases"] == ["challenger"]


def test_start_run_marks_exceptions_failed(settings):
    with pytest.raises(ZeroDivisionError):
        with tracking.start_run(run_name="boom") as run:
            1 / 0
    got = tracking.client(settings).get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["failure"].startswith("ZeroDivisionError")
    with tracking.start_run(run_name="ok") as run:
        tracking.log_metrics({"a": 1.0, "skip": "text", "nan": float("nan")})
    got = tracking.client(settings).get_run(run.info.run_id)
    assert got.info.status == "FINISHED" and got.data.metrics == {"a": 1.0}


def test_artifacts_land_under_state_dir(settings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tracking.start_run() as run:
        tracking.log_json_artifact({"x": 1}, "x.json")
    uri = run.info.artifact_uri
    assert uri.startswith((tmp_path / "state" / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
