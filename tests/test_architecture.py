"""The architecture as rules the code must keep: one record per stage holding all of its facts, the
product apart from its development tooling, and packages that import only downward."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.lake.layout import Layout
from pipeline.orchestration.stages import ORDER, STAGES, Stage

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("pipeline", "spark_jobs", "training", "serving", "dags")
TOOLING = "devtools"
REQUIRED = [f.name for f in dataclasses.fields(Stage)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _modules(*packages: str):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _imports(tree) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


# ------------------------------------------------------------------ one record per stage


@pytest.mark.parametrize("fact", REQUIRED)
def test_a_stage_without_one_of_its_facts_is_refused(fact):
    """Every fact without a default must be stated: a record that leaves one out cannot be made."""
    facts = {f.name: getattr(STAGES["wit"], f.name) for f in dataclasses.fields(Stage)}
    del facts[fact]
    with pytest.raises(TypeError, match=fact):
        Stage(**facts)


def test_every_record_states_sound_facts(tmp_path):
    settings = Settings()
    settings.paths.data_root = str(tmp_path)
    layout = Layout.from_settings(settings)
    assert len(REQUIRED) >= 10 and {"upstream", "settings", "outputs", "timeout_hours", "gpu", "asset"} <= set(REQUIRED)
    for position, (name, stage) in enumerate(STAGES.items()):
        assert stage.name == name and stage.help
        assert callable(stage.load()), name  # its entry point exists
        if stage.extra_inputs:
            assert callable(stage.load(stage.extra_inputs)), name
        # what it needs runs before it, so ORDER is a valid order to run them by hand
        assert set(stage.needs) <= set(ORDER[:position]), name
        for key in stage.settings:
            section, _, field = key.partition(".")
            assert hasattr(settings, section) and (not field or hasattr(getattr(settings, section), field)), key
        for key in stage.takes:
            section, _, field = key.partition(".")
            assert hasattr(getattr(settings, section), field), key
        outputs = stage.outputs(layout)
        assert isinstance(outputs, list) and all(p.startswith(str(tmp_path)) for p in outputs), name
        assert stage.timeout_hours > 0 and isinstance(stage.gpu, bool) and isinstance(stage.reads_taxonomy, bool)
        assert stage.asset_alias == f"wiki_image_topics.{name}"
        summary = {"model_uri": "models:/m/1"}
        assert re.match(r"^(file|models):", stage.asset_uri(settings, summary)), name
    assert [s.name for s in STAGES.values() if s.verifies_itself] == ["fetch"]
    assert [s.name for s in STAGES.values() if s.gpu] == ["embed", "train", "infer"]


def test_no_other_table_lists_stages():
    """Stage facts live in the records only: no other literal in the product names three stages or more
    (a dict keyed by stages, a tuple of them, a chain of tasks)."""
    names = set(STAGES)
    found = []
    for path, tree in _modules(*PRODUCT):
        if path == ROOT / "pipeline" / "orchestration" / "stages.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                items = node.keys
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items = node.elts
            else:
                continue
            strings = {n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            if len(strings & names) >= 3:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


# ------------------------------------------------------------------ the product apart from its tooling


def test_the_product_never_imports_the_tooling():
    offenders = [f"{path.relative_to(ROOT)}: {m}" for path, tree in _modules(*PRODUCT)
                 for m in _imports(tree) if m.split(".")[0] == TOOLING]
    offenders += [str(path.relative_to(ROOT)) for package in PRODUCT for path in (ROOT / package).rglob("*.py")
                  if re.search(rf"\b{TOOLING}\b[.:]", path.read_text())]  # entry points named as strings too
    assert not offenders, offenders


def test_the_images_hold_the_product_only():
    """Each Dockerfile copies named product folders, never the tooling or the whole checkout."""
    for dockerfile in [ROOT / "Dockerfile", *(ROOT / "docker").glob("*.Dockerfile")]:
        sources = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith(("COPY", "ADD"))]
        assert sources and not [s for s in sources if s.rstrip("/") in (".", TOOLING)], (dockerfile, sources)


# ------------------------------------------------------------------ layers


# Bottom to top; a package may import its own layer and those below it, never one above.
LAYERS = [
    {"pipeline.errors", "pipeline.config", "pipeline.features", "pipeline.lake"},
    {"pipeline.inputs", "pipeline.labels"},
    {"pipeline.orchestration"},
    {"pipeline.study", "training"},
    {"serving", "spark_jobs"},
    {"pipeline.__main__"},
    {"dags", TOOLING},
]


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" and len(parts) > 1 else parts[0]


def test_packages_import_only_downward():
    layer = {package: i for i, group in enumerate(LAYERS) for package in group}
    upward = []
    for path, tree in _modules(*PRODUCT, TOOLING):
        here = _package(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if here == "pipeline.__init__":
            continue
        for target in {_package(m) for m in _imports(tree)} & set(layer):
            if layer[target] > layer[here]:
                upward.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not upward, upward
    top_level = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert top_level == ["__init__.py", "__main__.py", "config.py", "errors.py"], top_level


def test_the_architecture_doc_shows_the_records():
    """docs/architecture.md's stage graph is the records' graph, and its stage table names each
    record's entry module."""
    from pipeline.orchestration.stages import mermaid

    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert f"```mermaid\n{mermaid()}```" in doc
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\w+)\s*\| `([\w/]+\.py)`", doc, re.M)}
    assert rows == {name: stage.entry.split(":")[0].replace(".", "/") + ".py" for name, stage in STAGES.items()}
