"""The CLI as users run it: help for every stage, clear errors for bad paths."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.orchestration.stages import ORDER

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, tmp_path, module="pipeline"):
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STATE_DIR": str(tmp_path / "state"),
             "DATA_ROOT": str(tmp_path / "data"), "SPARK_MASTER": "local[1]"},
    )


def test_every_stage_has_help(tmp_path):
    for stage in ORDER + ["config", "stages", "label-quality", "spark-archive"]:
        out = _run(stage, "--help", tmp_path=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "usage:" in out.stdout


def test_development_commands_live_apart(tmp_path):
    """The sample, its servers, the demo and the local cluster are `python -m devtools` commands; the
    product's CLI neither offers nor imports them."""
    for command in ("sample", "demo", "serve", "spark-cluster"):
        out = _run(command, "--help", tmp_path=tmp_path, module="devtools")
        assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
        assert _run(command, "--help", tmp_path=tmp_path).returncode == 2
    served = _run("--help", tmp_path=tmp_path, module="serving")  # the model server's own command line
    assert served.returncode == 0 and "serve.model_uri" in served.stdout, served.stderr
    code = ("import sys; from pipeline.__main__ import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'devtools'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_config_prints_resolved_settings(tmp_path):
    out = _run("config", "--dump-date", "20250101", "--set", "train.epochs=2", tmp_path=tmp_path)
    settings = json.loads(out.stdout.strip().splitlines()[-1])
    assert settings["paths"]["dump_date"] == "20250101" and settings["train"]["epochs"] == 2


@pytest.mark.parametrize("stage,missing", [("ingest", "page.sql.gz"), ("graph", "ingest/categories"),
                                           ("wit", "wit")])
def test_missing_input_names_stage_and_path(tmp_path, stage, missing):
    out = _run(stage, "--dumps-dir", str(tmp_path / "nowhere"), "--wit-dir", str(tmp_path / "nowit"),
               tmp_path=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith(f"error: [{stage}]") and missing in last
    assert not list((tmp_path / "data").rglob("*.parquet")), "nothing half-written"


def test_stages_prints_every_record(tmp_path):
    """`python -m pipeline stages`: each stage's facts for the resolved settings; --mermaid: their graph."""
    from pipeline.orchestration.stages import STAGES, mermaid

    out = _run("stages", "--dump-date", "20250101", tmp_path=tmp_path)
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(facts) == sorted(ORDER)
    assert facts["infer"]["needs"] == ["shard", "train"] and facts["infer"]["pool"] == STAGES["infer"].pool
    assert facts["wit"]["outputs"] == [str(tmp_path / "data" / "20250101" / "wit" / "v1.3" / "refined-rules" / "images")]
    assert _run("stages", "--mermaid", tmp_path=tmp_path).stdout == mermaid()
