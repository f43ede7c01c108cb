"""The champion quality gate, with a real MLflow SQLite store per test."""

import mlflow
import mlflow.pyfunc
import pytest

from pipeline.config import load_settings
from pipeline.orchestration import tracking
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
    return {a: str(v) for a, v in c.get_registered_model(tracking.model_name(settings)).aliases.items()}


def _scored(settings, auc, fp, **extra):
    """What score_champion returns for the current champion scored at ``auc`` on split ``fp``."""
    return {"version": str(registry.champion(settings).version), "fingerprint": fp, "auc_pr": auc, **extra}


def test_gate_compares_the_champion_on_the_challengers_split(settings):
    fp = registry.test_fingerprint(["b", "a", "c"])
    assert fp == registry.test_fingerprint(["c", "b", "a"])  # order-independent
    assert tracking.model_name(settings) == "wiki-image-topics-v1.3"

    r1 = registry.register_and_promote(settings, *_finished_run(0.5), 0.5, fp, None)
    assert r1["promoted"] and r1["reason"] == "no champion yet"
    assert r1["model_uri"] == "models:/wiki-image-topics-v1.3/1" and r1["champion_uri"] == r1["model_uri"]
    assert sorted(r1["aliases"]) == ["challenger", "champion"]

    worse = registry.register_and_promote(settings, *_finished_run(0.4), 0.4, fp, _scored(settings, 0.5, fp))
    assert not worse["promoted"] and "0.4000 < champion v1's 0.5000" in worse["reason"]
    assert _aliases(settings) == {"champion": "1", "challenger": "2"} and worse["champion_version"] == "1"

    equal = registry.register_and_promote(settings, *_finished_run(0.5), 0.5, fp, _scored(settings, 0.5, fp))
    assert equal["promoted"]  # ties go to the newer model
    assert _aliases(settings) == {"champion": "3", "challenger": "3"}

    # A new dump: another split. The champion is scored on the challenger's split, so they compare.
    fp2 = registry.test_fingerprint(["d", "e"])
    other = registry.register_and_promote(settings, *_finished_run(0.6), 0.6, fp2, _scored(settings, 0.55, fp2))
    assert other["promoted"] and other["champion_before"] == "3" and fp2 in other["reason"]
    assert other["champion_auc_pr"] == 0.55

    c = tracking.client(settings)
    mv = c.get_model_version(tracking.model_name(settings), "4")
    assert float(mv.tags[registry.TAG_AUC]) == 0.6 and mv.tags[registry.TAG_FINGERPRINT] == fp2
    assert float(mv.tags[registry.TAG_CHAMPION_AUC]) == 0.55 and mv.tags["promotion"] == other["reason"]


def test_gate_margin_failed_comparison_and_a_moved_champion_never_promote(settings, monkeypatch):
    fp = registry.test_fingerprint(["k"])
    registry.register_and_promote(settings, *_finished_run(0.5), 0.5, fp, None)
    settings.tracking.promote_min_margin = 0.05
    small = registry.register_and_promote(settings, *_finished_run(0.54), 0.54, fp, _scored(settings, 0.5, fp))
    assert not small["promoted"] and "margin 0.05" in small["reason"]
    settings.tracking.promote_min_margin = 0.0
    failed = _scored(settings, float("nan"), fp, error="OSError: store unreadable")
    broken = registry.register_and_promote(settings, *_finished_run(0.99), 0.99, fp, failed)
    assert not broken["promoted"] and "comparison with champion v1 failed: OSError" in broken["reason"]
    stale = {**_scored(settings, 0.1, fp), "version": "0"}
    moved = registry.register_and_promote(settings, *_finished_run(0.99), 0.99, fp, stale)
    assert not moved["promoted"] and "compared during training was v0" in moved["reason"]
    unscored = registry.register_and_promote(settings, *_finished_run(0.99), 0.99, fp, None)
    assert not unscored["promoted"]  # a champion appeared while this one trained: not compared
    wrong_split = registry.register_and_promote(settings, *_finished_run(0.99), 0.99, fp,
                                                _scored(settings, 0.1, "ffff"))
    assert not wrong_split["promoted"] and "another test split" in wrong_split["reason"]
    assert _aliases(settings)["champion"] == "1"


def test_each_taxonomy_has_its_own_champion(settings):
    fp = registry.test_fingerprint(["k"])
    registry.register_and_promote(settings, *_finished_run(0.9), 0.9, fp, None)
    settings.label.taxonomy = "v1.2"
    assert registry.champion(settings) is None  # the v1.3 champion is never compared with v1.2 models
    r = registry.register_and_promote(settings, *_finished_run(0.1), 0.1, fp, None)
    assert r["promoted"] and r["model_name"] == "wiki-image-topics-v1.2" and r["model_version"] == "1"
    settings.label.taxonomy = "v1.3"
    assert registry.champion(settings).version == 1


def test_failed_run_never_moves_an_alias(settings):
    fp = registry.test_fingerprint(["k1", "k2"])
    registry.register_and_promote(settings, *_finished_run(0.3), 0.3, fp)
    run_id, uri = _finished_run(0.9, status="FAILED")
    with pytest.raises(RuntimeError, match="FAILED"):
        registry.register_and_promote(settings, run_id, uri, 0.9, fp, _scored(settings, 0.3, fp))
    assert _aliases(settings) == {"champion": "1", "challenger": "1"}
    assert len(tracking.client(settings).search_model_versions(f"name='{tracking.model_name(settings)}'")) == 1


def test_nan_auc_is_never_champion(settings):
    r = registry.register_and_promote(settings, *_finished_run(0.0), float("nan"), "x")
    assert not r["promoted"] and r["aliases"] == ["challenger"] and r["champion_uri"] is None


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


def test_sigterm_inside_c_code_still_ends_the_run_terminated(settings):
    """TensorFlow, tracing a layer when SIGTERM lands, turns our Terminated into a SystemError: the
    process must still exit 128 + 15 and the run say it was terminated."""
    import os
    import signal
    import time

    with pytest.raises(tracking.Terminated) as raised:
        with tracking.start_run(run_name="traced") as run:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except tracking.Terminated as e:
                raise SystemError("<built-in method> returned a result with an exception set") from e
    assert raised.value.code == 128 + signal.SIGTERM
    got = tracking.client(settings).get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert "signal 15" in got.data.tags["failure"] and "SystemError" in got.data.tags["failure"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_swallowed_by_a_finalizer_still_ends_the_run_terminated(settings):
    """Python ignores an exception raised in a finalizer: a SIGTERM that lands there (SQLAlchemy's
    weakref callbacks run during training) must still end the run FAILED, and a training loop that
    asks ``pending_signal`` can stop at once."""
    import gc
    import os
    import signal

    class KilledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(tracking.Terminated) as raised:
        with tracking.start_run(run_name="swallowed") as run:
            KilledWhileCollected()
            gc.collect()
            assert tracking.pending_signal() == signal.SIGTERM  # the block went on: the raise was ignored
    assert raised.value.code == 128 + signal.SIGTERM
    got = tracking.client(settings).get_run(run.info.run_id)
    assert got.info.status == "FAILED" and "signal 15" in got.data.tags["failure"]
    assert tracking.pending_signal() is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_artifacts_land_under_state_dir(settings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tracking.start_run() as run:
        tracking.log_json_artifact({"x": 1}, "x.json")
    uri = run.info.artifact_uri
    assert uri.startswith((tmp_path / "state" / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_a_sigkilled_run_is_reaped_by_the_next_stage_and_a_live_one_is_not(settings, tmp_path):
    """A real SIGKILL: the run stays RUNNING until the next run started with settings ends it KILLED."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import sys, time; from pipeline.orchestration import tracking; from pipeline.config import load_settings; "
            "s = load_settings({'paths.state_dir': sys.argv[1]}, environ={}); tracking.configure(s); "
            "cm = tracking.start_run(run_name=sys.argv[2]); run = cm.__enter__(); "
            "print(run.info.run_id, flush=True); time.sleep(600)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    procs = {name: subprocess.Popen([sys.executable, "-c", code, settings.paths.state_dir, name], env=env,
                                    stdout=subprocess.PIPE, text=True) for name in ("doomed", "alive")}
    try:
        ids = {name: p.stdout.readline().strip() for name, p in procs.items()}
        procs["doomed"].send_signal(signal.SIGKILL)
        procs["doomed"].wait()
        c = tracking.client(settings)
        assert c.get_run(ids["doomed"]).info.status == "RUNNING"  # nothing could end it
        with tracking.start_run(run_name="train", settings=settings) as run:
            pass
        doomed, alive = c.get_run(ids["doomed"]), c.get_run(ids["alive"])
        assert doomed.info.status == "KILLED" and doomed.info.end_time
        assert f"process {procs['doomed'].pid}" in doomed.data.tags["reaped"]
        assert "found by train" in doomed.data.tags["reaped"]
        assert alive.info.status == "RUNNING" and "reaped" not in alive.data.tags
        assert c.get_run(run.info.run_id).data.tags[tracking.TAG_PID] == str(os.getpid())
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
