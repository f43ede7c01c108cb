"""Stage ``train``: fit the topic classifier on the image store and texts, evaluate, track, register.

``train.inputs`` says what the model reads: pixels, the image's texts, or both
(``training.inputs``). ``train.mode`` says what is trained: the whole model from
pixels (``finetune``), or only the heads on the image features the ``embed``
stage stored for the backbone (``heads``), composed with that backbone's image
tower into the logged model; ``auto`` picks heads where the features are there
(``choose_mode``).

Flow: index the four splits from the run's image index (labeled, stored images only) -> fit on train with early
stopping on validation loss (best weights restored) -> per-label thresholds on
the threshold split -> metrics on test -> the current champion scored on the
same test split -> log everything and the pyfunc model to one MLflow run ->
after the run ended FINISHED, register the model and apply the champion
quality gate (``training.registry``).

Multi-device data parallelism: TensorFlow backend -> ``tf.distribute.MirroredStrategy``
over all visible GPUs (model built and compiled in its scope; the batch size is
global); JAX backend -> ``keras.distribution.DataParallel`` over all devices;
the torch backend trains on one device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

from pipeline.config import Settings, load_settings
from pipeline.errors import StageError
from pipeline.inputs.store import store_root
from pipeline.labels.taxonomy import TAXONOMY_DIR, Taxonomy
from pipeline.lake.layout import Layout
from pipeline.orchestration import tracking

STAGE = "train"


def _distribution():
    """(name, context manager) for data parallel training over all local accelerators."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
            return f"tf.MirroredStrategy({len(gpus)} GPUs)", strategy.scope()
    elif backend == "jax":
        devices = keras.distribution.list_devices()
        if len(devices) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            return f"keras.DataParallel({len(devices)} devices)", contextlib.nullcontext()
    return "single-device", contextlib.nullcontext()


def _make_callbacks(patience: int):
    import keras

    class EpochLogger(keras.callbacks.Callback):
        """Per-epoch metrics (loss, val_loss, ...) to MLflow, plus epoch wall times."""

        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t0)
            tracking.log_metrics({**(logs or {}), "epoch_seconds": self.times[-1]}, step=epoch)

        def on_train_batch_end(self, batch, logs=None):
            signum = tracking.pending_signal()
            if signum is not None:  # a SIGTERM whose exception Python swallowed: stop now
                raise tracking.Terminated(signum)

    logger = EpochLogger()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True, verbose=1)
    return logger, stop


def _taxonomy_file(version_or_path: str):
    from pathlib import Path

    p = Path(version_or_path)
    return p if p.suffix in (".yaml", ".yml") else TAXONOMY_DIR / f"{version_or_path}.yaml"


def _params(settings: Settings, counts: dict, batch_size: int, distribution: str) -> dict:
    import keras

    t = settings.train
    return {
        **{f"train.{k}": v for k, v in vars(t).items()},
        "batch_size_effective": batch_size,
        "taxonomy": settings.label.taxonomy,
        "heuristics": settings.label.heuristics,
        "dump_date": settings.paths.dump_date,
        "keras_backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "distribution": distribution,
        **{f"n_{k}": v for k, v in counts.items()},
    }


def choose_mode(settings: Settings, inputs, idx: dict) -> tuple[str, object, str]:
    """(``finetune`` or ``heads``, the backbone for heads, why): ``train.mode``, where features allow.

    ``auto`` trains heads when the backbone's stored features cover every image of the run's
    splits, and fine-tunes when there is no backbone (a new taxonomy has no champion), when
    features are missing, or every ``train.finetune_every``-th time. ``heads`` without the
    features is a StageError naming the stage to run.
    """
    from training import backbone as backbones

    t = settings.train
    if not inputs.sees_image:
        return "finetune", None, "a text model has no image tower: it trains whole"
    if t.mode == "finetune":
        return "finetune", None, "train.mode=finetune"
    backbone = backbones.resolve(settings)
    problem, where = None, store_root(settings)
    if backbone is None:
        problem = "there is no backbone (no registered model with an image tower to take it from)"
    else:
        from pipeline.features.embeddings import missing_shards

        where = backbone.features_root(settings)
        missing = missing_shards(where, {s for i in idx.values() for s in i.shard_names})
        if missing:
            problem = (f"{len(missing)} store shards of the run's images have no features of backbone "
                       f"{backbone.fingerprint} ({backbone.model_uri})")
    if problem and t.mode == "heads":
        raise StageError(STAGE, where, f"train.mode=heads: {problem}; run the embed stage first "
                                       f"(python -m pipeline embed)")
    if problem:
        return "finetune", None, problem
    done = backbones.heads_trained_on(settings, backbone.fingerprint)
    if t.mode == "auto" and t.finetune_every > 0 and done >= t.finetune_every - 1:
        return "finetune", None, f"{done} heads trained on backbone {backbone.fingerprint}: train.finetune_every={t.finetune_every}"
    return "heads", backbone, f"features of backbone {backbone.fingerprint} ({backbone.model_uri}) cover every image"


def _check(settings: Settings):
    t = settings.train
    if t.head not in ("flat", "chmcnn"):
        raise ValueError(f"train.head must be 'flat' or 'chmcnn', not {t.head!r}")
    if t.head == "chmcnn" and not t.hierarchical:
        raise ValueError("train.head=chmcnn needs train.hierarchical=true (targets closed under ancestors)")


def predict_split(model, index, inputs, spec, batch: int, change=None) -> np.ndarray:
    """Probabilities for a whole split, streamed batch by batch (``change`` edits each batch's inputs first)."""
    from training import data
    from training.model import predict_probs

    loader = data.ShardBatches(index, batch, spec, inputs, shuffle=False)
    out = []
    for i in range(len(loader)):
        x = inputs.read(index, loader.order[i * loader.batch_size:(i + 1) * loader.batch_size], spec)
        out.append(predict_probs(model, change(x) if change else x, batch))
    return np.concatenate(out)


def text_figures(model, index, inputs, spec, batch, y_test, p_test, thresholds, names) -> dict:
    """How the model does where the words are missing (test images that have none, every test image with its
    text removed) and, beside an image, without the image."""
    from pipeline.features.texts import has_text
    from training import metrics

    if not inputs.reads_words:
        return {}
    ids = np.concatenate([inputs.read(index, rows, spec)["text"] for rows in np.array_split(
        np.arange(len(index)), max(1, len(index) // batch))])
    no_text = ~has_text(ids)
    out = {"test_images_without_text": int(no_text.sum())}
    if no_text.any():
        out["test_macro_auc_pr_images_without_text"] = metrics.evaluate(
            y_test[no_text], p_test[no_text], thresholds, names)["macro_auc_pr"]
    if inputs.has_image_flag:
        def no_words(x):
            return {**x, "text": np.zeros_like(x["text"])}

        def no_image(x):
            blank = inputs.blank(len(x["text"]), spec)
            return {**x, **{k: v for k, v in blank.items() if k != "text"}}

        out["test_macro_auc_pr_text_removed"] = metrics.evaluate(
            y_test, predict_split(model, index, inputs, spec, batch, no_words), thresholds, names)["macro_auc_pr"]
        out["test_macro_auc_pr_image_removed"] = metrics.evaluate(
            y_test, predict_split(model, index, inputs, spec, batch, no_image), thresholds, names)["macro_auc_pr"]
    return out


def run(settings: Settings) -> dict:
    """Train, evaluate, log and register; returns the stage summary."""
    import keras

    from pipeline.features.texts import TextEncoding
    from training import backbone as backbones
    from training import data, metrics, pyfunc, registry
    from training.inputs import InputSpec, ModelInputs
    from training.losses import make_loss
    from training.model import backbone_fingerprint, build_head, build_model, compose, parts
    from training.thresholds import fit_thresholds

    _check(settings)
    t = settings.train
    inputs = ModelInputs(t.inputs)
    encoding = TextEncoding.from_settings(t) if inputs.reads_words else None
    keras.utils.set_random_seed(t.seed)
    tax = Taxonomy.load(settings.label.taxonomy)
    names, slugs, n_labels = tax.names, tax.slugs, len(tax.names)
    layout = Layout.from_settings(settings)

    idx = {s: data.split_index(settings, s, n_labels) for s in ("train", "validation", "threshold", "test")}
    mode, backbone, mode_reason = choose_mode(settings, inputs, idx)
    heads = mode == "heads"
    if heads:
        for i in idx.values():
            data.attach_features(i, backbone.features_root(settings), backbone.fingerprint)
    size = backbone.image_size if heads else t.image_size
    spec = InputSpec(size, encoding, backbone.dim if heads else 0)
    fit_inputs = inputs.heads() if heads else inputs  # what the trained Keras model reads
    counts = {s: len(i) for s, i in idx.items()}
    counts.update({f"{s}_unlabeled": i.unlabeled for s, i in idx.items()})
    counts.update({f"{s}_without_bytes": i.missing for s, i in idx.items()})
    batch = max(1, min((t.heads_batch_size or t.batch_size) if heads else t.batch_size, counts["train"]))
    positives = idx["train"].y.sum(0)
    fingerprint = registry.test_fingerprint(idx["test"].keys)

    experiment_id = tracking.configure(settings)
    previous_policy = keras.mixed_precision.global_policy()
    if t.mixed_precision:
        keras.mixed_precision.set_global_policy(t.precision_policy)
    distribution, scope = _distribution()
    run_tags = {
        "stage": STAGE,
        "taxonomy": tax.version,
        "heuristics": settings.label.heuristics,
        "dump_date": settings.paths.dump_date,
        registry.TAG_FINGERPRINT: fingerprint,
        "image_index": layout.image_index,
        "model_inputs": str(inputs),
        "train_mode": mode,
        **({"backbone_uri": backbone.model_uri} if heads else {}),
    }
    ancestor = tax.ancestor_matrix() if t.head == "chmcnn" else None
    head_args = dict(text_vocab=t.text_vocab, text_dim=t.text_dim, drop_text=t.drop_text,
                     drop_image=t.drop_image, seed=t.seed)

    def new_model(weights: str, trainable="all", bn_momentum=0.99):
        if heads:
            return build_head(n_labels, fit_inputs, spec, t.head == "chmcnn", ancestor, **head_args)
        return build_model(n_labels, t.backbone, weights if inputs.reads_pixels else "none", size, trainable,
                           t.head == "chmcnn", ancestor, bn_momentum=bn_momentum, inputs=inputs,
                           text_shape=encoding.shape if encoding else (1, 1), **head_args)

    try:
        with tracking.start_run(run_name=f"{mode}-{t.backbone if inputs.sees_image else 'text'}-{t.loss}-"
                                         f"{settings.paths.dump_date}", tags=run_tags,
                                settings=settings) as active:
            run_id = active.info.run_id
            tracking.log_params({**_params(settings, counts, batch, distribution), "train_mode": mode,
                                 "train_mode_reason": mode_reason[:500]})
            with scope:
                try:
                    model = new_model(t.weights, t.trainable, t.bn_momentum)
                except Exception as e:
                    if t.weights == "imagenet":
                        raise RuntimeError(
                            f"could not load ImageNet weights ({e}); offline? set train.weights=none or a .weights.h5 path"
                        ) from e
                    raise
                # Start where the backbone's model left off: its heads (layers of the same shapes: the
                # same label set and inputs), and for a fine-tune from train.init_from its tower too.
                start, source_tower = (backbone if heads else None), None
                if t.init_from and not heads and inputs.reads_pixels:
                    start = backbones.resolve_uri(settings, t.init_from)
                    if start is None:
                        raise StageError(STAGE, t.init_from, "train.init_from: that model has no image tower")
                if start is not None:
                    source_tower, source_head = backbones.load_parts(settings, start)
                    tower, head = parts(model)
                    if tower is not None:
                        tower.set_weights(source_tower.get_weights())
                    warmed = backbones.warm_start(head, source_head)
                    tracking.set_tags({"init_from": start.model_uri, "warm_started_layers": ",".join(warmed)})
                loss = make_loss(
                    "mcloss" if t.head == "chmcnn" else t.loss,
                    positives=positives,
                    total=counts["train"],
                    gamma=t.focal_gamma,
                    ancestor_matrix=ancestor,
                )
                model.compile(
                    optimizer=keras.optimizers.Adam(t.learning_rate), loss=loss, jit_compile=bool(t.jit_compile)
                )
            loader = dict(workers=t.workers, use_multiprocessing=t.use_multiprocessing)
            train_ds = data.ShardBatches(idx["train"], batch, spec, fit_inputs, shuffle=True, seed=t.seed,
                                         drop_remainder=True, **loader)
            val_ds = data.ShardBatches(idx["validation"], batch, spec, fit_inputs, shuffle=False, **loader)
            logger, stop = _make_callbacks(t.patience)
            t0 = time.perf_counter()
            history = model.fit(train_ds, validation_data=val_ds, epochs=t.epochs, callbacks=[logger, stop], verbose=2)
            fit_seconds = time.perf_counter() - t0
            epochs_run = len(history.history.get("loss", []))
            val_losses = history.history.get("val_loss", [])
            best_epoch = int(np.argmin(val_losses)) if val_losses else epochs_run - 1
            # Steady-state speed: skip the first epoch (tracing/compilation) when there is more than one.
            timed = logger.times[1:] if len(logger.times) > 1 else logger.times
            train_ips = len(train_ds) * train_ds.batch_size * len(timed) / max(sum(timed), 1e-9)  # images seen

            # Export a float32 copy without optimizer state: what gets served.
            keras.mixed_precision.set_global_policy("float32")
            export = new_model("none")
            export.set_weights(model.get_weights())
            # A heads model is served whole: the backbone's tower composed with the heads just trained.
            served = compose(source_tower, export) if heads else export  # the backbone's tower, loaded once
            tower = parts(served)[0]
            backbone_info = None
            if tower is not None:
                backbone_info = (backbone.as_dict() if heads else
                                 {"fingerprint": backbone_fingerprint(tower), "dim": int(tower.output.shape[-1]),
                                  "image_size": size})

            p_thr = predict_split(export, idx["threshold"], fit_inputs, spec, batch)
            y_thr = idx["threshold"].y
            thresholds = fit_thresholds(y_thr, p_thr, seed=t.seed)
            y_test = idx["test"].y
            t1 = time.perf_counter()
            p_test = predict_split(export, idx["test"], fit_inputs, spec, batch)
            predict_ips = len(y_test) / max(time.perf_counter() - t1, 1e-9)
            words = text_figures(export, idx["test"], fit_inputs, spec, batch, y_test, p_test, thresholds, names)

            test_metrics = metrics.evaluate(y_test, p_test, thresholds, names, train_counts=positives)
            thr_metrics = metrics.evaluate(y_thr, p_thr, thresholds, names, train_counts=positives)
            table = metrics.per_label_table(y_test, p_test, thresholds, names)
            macro_ap = test_metrics["macro_auc_pr"]
            prevalence = test_metrics["mean_prevalence"]
            # A random scorer's AP for a label is its prevalence; macro AP averages over labels with a
            # positive, so chance is the mean prevalence over those same labels (= over all labels when
            # every label occurs in test).
            chance = test_metrics["mean_prevalence_positive_labels"]
            beats_chance = bool(np.isfinite(macro_ap) and macro_ap >= 2 * chance)

            tracking.log_metrics(thr_metrics, prefix="threshold_")
            tracking.log_metrics(
                {
                    "train_images_per_s": train_ips,
                    "predict_images_per_s": predict_ips,
                    "fit_seconds": fit_seconds,
                    "epochs_run": epochs_run,
                    "best_epoch": best_epoch,
                    "best_val_loss": float(min(val_losses)) if val_losses else float("nan"),
                    "test_chance_auc_pr": chance,
                    "test_beats_chance": float(beats_chance),
                    **words,
                }
            )
            tracking.log_metrics({f"test_ap_{s}": v for s, v in zip(table["slug"], table["average_precision"])})

            # The gate compares like with like: the champion, scored here on this test split.
            current = registry.champion(settings)
            compared = None
            if current is not None:
                compared = registry.score_champion(settings, current, idx["test"], y_test, names, fingerprint)
                tracking.set_tags({"champion_compared": compared["version"],
                                   **({"champion_comparison_error": compared["error"][:5000]}
                                      if "error" in compared else {})})
                if "metrics" in compared:
                    tracking.log_metrics(compared["metrics"], prefix="champion_test_")

            with tempfile.TemporaryDirectory() as d:
                thr_json = {"labels": names, "slugs": slugs, "thresholds": [float(x) for x in thresholds]}
                tracking.log_json_artifact(thr_json, "thresholds.json")
                csv = os.path.join(d, "per_label.csv")
                table.to_csv(csv, index=False)
                tracking.log_artifact(csv)
                tracking.log_artifact(metrics.plot_pr_curves(y_test, p_test, names, os.path.join(d, "pr_curves.png")), "plots")
                tracking.log_artifact(
                    metrics.plot_thresholds(
                        thresholds, names, os.path.join(d, "thresholds.png"),
                        table["f1_at05"].to_numpy(), table["f1_atthr"].to_numpy(),
                    ),
                    "plots",
                )
                tax_file = _taxonomy_file(settings.label.taxonomy)
                if tax_file.exists():
                    tracking.log_artifact(str(tax_file), "taxonomy")
                tracking.log_text_artifact(tax.version + "\n", "taxonomy_version.txt", "taxonomy")
                tracking.log_json_artifact(history.history, "history.json")
                serve_spec = InputSpec(size, encoding, spec.feature_dim)
                arts = pyfunc.artifacts_for(d, served, names, slugs, thresholds, tax.version, inputs, encoding,
                                            backbone_info)
                info = pyfunc.log_model("model", arts, inputs.signature(slugs, serve_spec),
                                        inputs.example(serve_spec))
            # the test figures belong to the logged model too (MLflow 3 links them to it)
            tracking.log_metrics(test_metrics, prefix="test_", model_id=info.model_id)
            logged_model_uri = info.model_uri
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        data.close_handles()

    summary = {
        "stage": STAGE,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "logged_model_uri": logged_model_uri,
        "train_mode": mode,
        "train_mode_reason": mode_reason,
        "backbone": backbone_info,
        "test_macro_auc_pr": macro_ap,
        "test_mean_prevalence": prevalence,
        "test_mean_prevalence_positive_labels": chance,
        "beats_chance": beats_chance,
        "test_fingerprint": fingerprint,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "train_images_per_s": round(train_ips, 1),
        "predict_images_per_s": round(predict_ips, 1),
        "distribution": distribution,
        "backend": keras.backend.backend(),
        "model_inputs": str(inputs),  # ("inputs" is the stage record's lineage)
        **words,
        **{f"n_{k}": v for k, v in counts.items()},
    }
    # The run is FINISHED here: only now may the registry and its aliases change.
    version_tags = {"run_id": run_id, "taxonomy": tax.version, "beats_chance": beats_chance, "model_inputs": str(inputs)}
    if backbone_info:
        version_tags.update(backbones.tags(backbone_info["fingerprint"], backbone_info["dim"],
                                           backbone_info["image_size"], mode))
    reg = registry.register_and_promote(settings, run_id, logged_model_uri, macro_ap, fingerprint, compared,
                                        tags=version_tags)
    summary.update(
        model_name=reg["model_name"],
        model_uri=reg["model_uri"],
        model_version=reg["model_version"],
        aliases=reg["aliases"],
        champion_before=reg["champion_before"],
        champion_auc_pr=reg["champion_auc_pr"],
        champion_version=reg["champion_version"],
        champion_uri=reg["champion_uri"],
        promoted=reg["promoted"],
        promotion_reason=reg["reason"],
    )
    tracking.log_json_artifact(summary, "summary.json", run_id=run_id, settings=settings)
    return summary


def main(argv=None) -> int:
    """``python -m training.train [--set section.field=value ...]``; prints the summary JSON last."""
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set {item!r}: expected section.field=value")
        k, v = item.split("=", 1)
        overrides[k] = v
    settings = load_settings(overrides)
    try:
        summary = run(settings)
    except StageError as e:
        print(str(e), file=sys.stderr)
        return 2
    print(json.dumps(summary, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
