"""The backbone: the image tower of a registered model version, whose features the ``embed`` stage stores.

``embed.backbone_uri`` names it (empty: the registered model's champion). Every
model with an image tower is registered with the tower's fingerprint
(``training.model.backbone_fingerprint``) as version tags, so finding out which
features a version reads needs no download; a heads model composed on a tower
carries that tower's fingerprint, so the champion's backbone stays the same
until a fine-tuned model is promoted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.features.embeddings import features_root
from pipeline.inputs.store import store_root
from pipeline.orchestration import tracking

TAG_FINGERPRINT, TAG_DIM, TAG_SIZE, TAG_MODE = "backbone_fingerprint", "backbone_dim", "backbone_image_size", "train_mode"


@dataclass(frozen=True)
class Backbone:
    model_uri: str  # models:/<name>/<version>
    version: str
    fingerprint: str
    dim: int
    image_size: int

    def as_dict(self) -> dict:
        return asdict(self)

    def features_root(self, settings) -> str:
        return features_root(store_root(settings), self.fingerprint)


def tags(fingerprint: str, dim: int, image_size: int, mode: str) -> dict:
    """The version tags a model with an image tower is registered with."""
    return {TAG_FINGERPRINT: fingerprint, TAG_DIM: dim, TAG_SIZE: image_size, TAG_MODE: mode}


def resolve(settings) -> Backbone | None:
    """The backbone for these settings, or None: no such model, or one without an image tower (text)."""
    if settings.embed.backbone_uri:
        return resolve_uri(settings, settings.embed.backbone_uri)
    try:
        return resolve_uri(settings, f"models:/{tracking.model_name(settings)}@champion")
    except LookupError:
        return None  # no champion yet


def resolve_uri(settings, uri: str) -> Backbone | None:
    """The image tower of the registered model version ``uri`` (an alias resolved to its version); None for a
    model without one. LookupError where the registry has no such version."""
    exact, version = tracking.resolve_version(settings, uri)
    name = exact[len("models:/"):].split("/", 1)[0]
    found = tracking.client(settings).get_model_version(name, version).tags or {}
    if TAG_FINGERPRINT not in found:
        return None
    return Backbone(exact, version, found[TAG_FINGERPRINT], int(found[TAG_DIM]), int(found[TAG_SIZE]))


def lineage_inputs(settings) -> dict:
    """What stored features and the heads trained on them depend on: the backbone's fingerprint (not its
    version: a heads model promoted on the same tower changes nothing)."""
    backbone = resolve(settings)
    return {"backbone": None if backbone is None else backbone.fingerprint}


def load_parts(settings, backbone: Backbone):
    """(image tower, heads) of the backbone's model (Keras), the tower checked against the fingerprint it was
    registered with."""
    from training.model import backbone_fingerprint, parts
    from training.pyfunc import load_predictor

    tower, head = parts(load_predictor(backbone.model_uri, settings).model)
    if tower is None or backbone_fingerprint(tower) != backbone.fingerprint:
        raise ValueError(f"{backbone.model_uri}: its image tower is not the one registered "
                         f"({backbone.fingerprint}); was the version's tag edited?")
    return tower, head


def load_tower(settings, backbone: Backbone):
    """The backbone's image tower (Keras)."""
    return load_parts(settings, backbone)[0]


def warm_start(model, source) -> list[str]:
    """Copy ``source``'s weights into ``model`` layer by layer, where a layer of the same name has weights of
    the same shapes (the heads of a model of the same label set and inputs); returns the layers copied."""
    copied = []
    theirs = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        other = theirs.get(layer.name)
        if other is None or not layer.weights or isinstance(layer, type(model)):
            continue
        if [w.shape for w in layer.get_weights()] == [w.shape for w in other.get_weights()]:
            layer.set_weights(other.get_weights())
            copied.append(layer.name)
    return copied


def heads_trained_on(settings, fingerprint: str) -> int:
    """How many heads models of this registered model were trained on the backbone ``fingerprint``."""
    name = tracking.model_name(settings)
    versions = tracking.client(settings).search_model_versions(f"name='{name}'")
    return sum(1 for v in versions if (v.tags or {}).get(TAG_FINGERPRINT) == fingerprint
               and (v.tags or {}).get(TAG_MODE) == "heads")
