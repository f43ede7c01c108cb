"""Model registry with a quality gate.

Every successfully finished training registers a new version of
``settings.tracking.model_name`` and takes the ``challenger`` alias. The
``champion`` alias (what batch inference serves by default) moves only to a
version whose test macro AUC(PR) is at least the champion's, measured on the
same test split: the split is identified by a fingerprint of its sorted image
keys. A version evaluated on a different test split is not comparable, so it is
not promoted (re-evaluating the champion is out of scope) and the returned
summary says why. Runs that did not end FINISHED never touch aliases.
"""

from __future__ import annotations

import hashlib
import math

from pipeline import tracking
from pipeline.config import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_AUC = "test_macro_auc_pr"
TAG_FINGERPRINT = "test_fingerprint"


def test_fingerprint(keys) -> str:
    """sha256 of the sorted, newline-joined test image keys (first 16 hex digits)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()[:16]


def _champion(client, name):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _auc_of(client, mv) -> float:
    value = (mv.tags or {}).get(TAG_AUC)
    if value is None and mv.run_id:
        value = client.get_run(mv.run_id).data.metrics.get(TAG_AUC)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def register_and_promote(
    settings: Settings,
    run_id: str,
    model_uri: str,
    test_macro_auc_pr: float,
    fingerprint: str,
    tags: dict | None = None,
) -> dict:
    """Register ``model_uri`` (logged by ``run_id``), move ``challenger``, and ``champion`` if it passes the gate."""
    import mlflow

    client = tracking.client(settings)
    name = settings.tracking.model_name
    status = client.get_run(run_id).info.status
    if status != "FINISHED":
        raise RuntimeError(f"run {run_id} is {status}: only FINISHED runs are registered or move aliases")

    version_tags = {TAG_AUC: repr(float(test_macro_auc_pr)), TAG_FINGERPRINT: fingerprint, **(tags or {})}
    mlflow.set_registry_uri(settings.mlflow_uri)
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in version_tags.items()})
    version = str(mv.version)
    client.set_registered_model_alias(name, CHALLENGER, version)

    champion = _champion(client, name)
    auc = float(test_macro_auc_pr)
    result = {
        "model_name": name,
        "model_version": version,
        "model_uri": f"models:/{name}/{version}",
        "champion_before": None if champion is None else str(champion.version),
        "champion_auc_pr_before": None,
    }
    if not math.isfinite(auc):
        promote, reason = False, "test macro AUC(PR) is undefined (no positive label in the test split)"
    elif champion is None:
        promote, reason = True, "no champion yet"
    else:
        champ_auc = _auc_of(client, champion)
        champ_fp = (champion.tags or {}).get(TAG_FINGERPRINT)
        result["champion_auc_pr_before"] = champ_auc
        if champ_fp != fingerprint:
            promote, reason = False, (
                f"champion v{champion.version} was evaluated on a different test split "
                f"(fingerprint {champ_fp} vs {fingerprint}); not comparable, re-evaluation is out of scope"
            )
        elif not math.isfinite(champ_auc) or auc >= champ_auc:
            promote, reason = True, f"test macro AUC(PR) {auc:.4f} >= champion v{champion.version}'s {champ_auc:.4f}"
        else:
            promote, reason = False, f"test macro AUC(PR) {auc:.4f} < champion v{champion.version}'s {champ_auc:.4f}"
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", reason[:5000])
    current = client.get_model_version(name, version)
    result.update(promoted=promote, reason=reason, aliases=sorted(current.aliases or []))
    return result
