"""Model registry with a quality gate that compares like with like.

Each taxonomy (label set) has its own registered model,
``<tracking.model_name>-<taxonomy>`` (``tracking.model_name(settings)``), so
models of different label sets are never compared. Every successfully
finished training registers a new version and takes the ``challenger`` alias.
While the challenger is evaluated, the current champion is scored on the
challenger's test split, with the same labels and the same stored images
(``score_champion``); both figures go to the challenger's run. ``champion``
(what batch inference serves) moves to the challenger when its test macro
AUC(PR) is at least the champion's there plus ``tracking.promote_min_margin``.
The reason is recorded on the version. Runs that did not end FINISHED, or
whose champion comparison failed, never move ``champion``.
"""
from __future__ import annotations

import hashlib
import math

from pipeline.config import Settings
from pipeline.orchestration import tracking

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_AUC = "test_macro_auc_pr"
TAG_FINGERPRINT = "test_fingerprint"
TAG_CHAMPION_AUC = "champion_test_macro_auc_pr"


def test_fingerprint(keys) -> str:
    """sha256 of the sorted, newline-joined test image keys (first 16 hex digits)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()[:16]


def champion(settings: Settings):
    """The registered model's current champion version, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client(settings).get_model_version_by_alias(tracking.model_name(settings), CHAMPION)
    except MlflowException:
        return None


def score_champion(settings: Settings, version, test_index, y_test, names, fingerprint: str) -> dict:
    """The champion's test figures on the challenger's test split, with the challenger's labels.

    The champion is loaded as the registered pyfunc and reads what it was
    trained on (images at its own input size, texts by its own encoding) for
    the same test images, so any two ``train.inputs`` modes compare. Failures are
    returned as ``error`` (the gate then refuses to promote), never raised.
    """
    from training import data, metrics
    from training.pyfunc import load_predictor

    out = {"version": str(version.version), "fingerprint": fingerprint}
    try:
        predictor = load_predictor(f"models:/{version.name}/{version.version}", settings)
        if list(predictor.names) != list(names):
            raise ValueError(f"champion v{version.version} predicts another label set ({len(predictor.names)} labels)")
        features = getattr(test_index, "features", None)
        if predictor.backbone and features is not None and features.fingerprint == predictor.backbone["fingerprint"]:
            # its tower made the stored features: its heads read them, no image is decoded again
            x = data.load_inputs(test_index, predictor.inputs.heads(), predictor.spec)
            probs = predictor.predict_inputs(text_ids=x.get("text"), features=x["features"])
        else:
            x = data.load_inputs(test_index, predictor.inputs, predictor.spec)
            probs = predictor.predict_inputs(x.get("image"), x.get("text"))
        figures = metrics.evaluate(y_test, probs, predictor.thresholds, names)
        # per label too, as the challenger's test_ap_<slug>, for the report's side-by-side table
        figures.update({f"ap_{s}": metrics.average_precision(y_test[:, j], probs[:, j])
                        for j, s in enumerate(predictor.slugs)})
        out["auc_pr"] = float(figures["macro_auc_pr"])
        out["metrics"] = figures
    except Exception as e:  # noqa: BLE001 - the gate records why and does not promote
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def _decide(auc: float, current, compared: dict | None, fingerprint: str, margin: float) -> tuple[bool, str]:
    if not math.isfinite(auc):
        return False, "test macro AUC(PR) is undefined (no positive label in the test split)"
    if current is None:
        return True, "no champion yet"
    if compared is None or compared.get("version") != str(current.version):
        was = "none" if compared is None else f"v{compared.get('version')}"
        return False, f"the champion is v{current.version}, but the one compared during training was {was}"
    if compared.get("error"):
        return False, f"the comparison with champion v{current.version} failed: {compared['error']}"
    if compared.get("fingerprint") != fingerprint:
        return False, f"champion v{current.version} was scored on another test split"
    champ = float(compared["auc_pr"])
    if not math.isfinite(champ):
        return True, f"champion v{current.version}'s test macro AUC(PR) on this split is undefined"
    rule = f"champion v{current.version}'s {champ:.4f}" + (f" + margin {margin:g}" if margin else "")
    if auc >= champ + margin:
        return True, f"test macro AUC(PR) {auc:.4f} >= {rule}, both on test split {fingerprint}"
    return False, f"test macro AUC(PR) {auc:.4f} < {rule}, both on test split {fingerprint}"


def register_and_promote(
    settings: Settings,
    run_id: str,
    model_uri: str,
    test_macro_auc_pr: float,
    fingerprint: str,
    compared: dict | None = None,
    tags: dict | None = None,
) -> dict:
    """Register ``model_uri`` (logged by ``run_id``), move ``challenger``, and ``champion`` if it passes the gate.

    ``compared`` is ``score_champion``'s result for the champion at training
    time (None: there was none). The champion must still be that version, and
    the challenger's test macro AUC(PR) at least its figure on the same split
    plus ``tracking.promote_min_margin``. The reason is recorded on the version.
    """
    import mlflow

    client = tracking.client(settings)
    name = tracking.model_name(settings)
    status = client.get_run(run_id).info.status
    if status != "FINISHED":
        raise RuntimeError(f"run {run_id} is {status}: only FINISHED runs are registered or move aliases")

    version_tags = {TAG_AUC: repr(float(test_macro_auc_pr)), TAG_FINGERPRINT: fingerprint, **(tags or {})}
    if compared is not None:
        version_tags["champion_compared"] = compared["version"]
        if "auc_pr" in compared:
            version_tags[TAG_CHAMPION_AUC] = repr(compared["auc_pr"])
    mlflow.set_registry_uri(settings.mlflow_uri)
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in version_tags.items()})
    version = str(mv.version)
    client.set_registered_model_alias(name, CHALLENGER, version)

    current = champion(settings)
    auc = float(test_macro_auc_pr)
    promote, reason = _decide(auc, current, compared, fingerprint, settings.tracking.promote_min_margin)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", reason[:5000])
    now = champion(settings)
    return {
        "model_name": name,
        "model_version": version,
        "model_uri": f"models:/{name}/{version}",
        "champion_before": None if current is None else str(current.version),
        "champion_auc_pr": (compared or {}).get("auc_pr"),
        "champion_version": None if now is None else str(now.version),
        "champion_uri": None if now is None else f"models:/{name}/{now.version}",
        "promoted": promote,
        "reason": reason,
        "aliases": sorted(client.get_model_version(name, version).aliases or []),
    }
