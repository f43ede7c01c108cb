"""Stage ``train``: fit the topic classifier on the image store and texts, evaluate, track, register.

``train.inputs`` says what the model reads: pixels, the image's texts, or both
(``training.model``).

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


def run(settings: Settings) -> dict:
    """Train, evaluate, log and register; returns the stage summary."""
    import keras

    from pipeline.features.texts import TextEncoding, has_text
    from training import data, metrics, pyfunc, registry
    from training.losses import make_loss
    from training.model import build_model, check_inputs, predict_probs
    from training.thresholds import fit_thresholds

    t = settings.train
    if t.head not in ("flat", "chmcnn"):
        raise ValueError(f"train.head must be 'flat' or 'chmcnn', not {t.head!r}")
    if t.head == "chmcnn" and not t.hierarchical:
        raise ValueError("train.head=chmcnn needs train.hierarchical=true (targets closed under ancestors)")
    inputs = check_inputs(t.inputs)
    encoding = TextEncoding.from_settings(t) if inputs != "image" else None
    keras.utils.set_random_seed(t.seed)
    tax = Taxonomy.load(settings.label.taxonomy)
    names, slugs, n_labels = tax.names, tax.slugs, len(tax.names)
    size = settings.train.image_size
    layout = Layout.from_settings(settings)

    idx = {s: data.split_index(settings, s, n_labels) for s in ("train", "validation", "threshold", "test")}
    counts = {s: len(i) for s, i in idx.items()}
    counts.update({f"{s}_unlabeled": i.unlabeled for s, i in idx.items()})
    counts.update({f"{s}_without_bytes": i.missing for s, i in idx.items()})
    batch = max(1, min(t.batch_size, counts["train"]))
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
        "model_inputs": inputs,
    }
    try:
        with tracking.start_run(run_name=f"{t.backbone if inputs != 'text' else 'text'}-{t.loss}-"
                                         f"{settings.paths.dump_date}", tags=run_tags,
                                settings=settings) as active:
            run_id = active.info.run_id
            tracking.log_params(_params(settings, counts, batch, distribution))
            ancestor = tax.ancestor_matrix() if t.head == "chmcnn" else None
            text_args = dict(inputs=inputs, text_shape=encoding.shape if encoding else (1, 1),
                             text_vocab=t.text_vocab, text_dim=t.text_dim, drop_text=t.drop_text,
                             drop_image=t.drop_image, seed=t.seed)
            with scope:
                try:
                    model = build_model(
                        n_labels, t.backbone, t.weights if inputs != "text" else "none", size, t.trainable,
                        t.head == "chmcnn", ancestor, bn_momentum=t.bn_momentum, **text_args,
                    )
                except Exception as e:
                    if t.weights == "imagenet":
                        raise RuntimeError(
                            f"could not load ImageNet weights ({e}); offline? set train.weights=none or a .weights.h5 path"
                        ) from e
                    raise
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
            train_ds = data.ShardBatches(
                idx["train"], batch, size, shuffle=True, seed=t.seed, drop_remainder=True,
                workers=t.workers, use_multiprocessing=t.use_multiprocessing, inputs=inputs, encoding=encoding,
            )
            val_ds = data.ShardBatches(
                idx["validation"], batch, size, shuffle=False,
                workers=t.workers, use_multiprocessing=t.use_multiprocessing, inputs=inputs, encoding=encoding,
            )
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
            export = build_model(n_labels, t.backbone, "none", size, "all", t.head == "chmcnn", ancestor,
                                 **text_args)
            export.set_weights(model.get_weights())

            def split_inputs(split):
                return data.load_inputs(idx[split], inputs, size, encoding), idx[split].y

            x_thr, y_thr = split_inputs("threshold")
            p_thr = predict_probs(export, x_thr, batch)
            thresholds = fit_thresholds(y_thr, p_thr, seed=t.seed)
            del x_thr

            x_test, y_test = split_inputs("test")
            warm = {k: v[:batch] for k, v in x_test.items()}
            predict_probs(export, warm, batch)  # warm-up: exclude tracing from the timing
            t1 = time.perf_counter()
            p_test = predict_probs(export, x_test, batch)
            predict_ips = len(y_test) / max(time.perf_counter() - t1, 1e-9)
            text_figures = {}
            if "text" in x_test:
                # How the model does where the words are missing (the test images that have none,
                # every test image with its text removed) and, for image+text, without the pixels.
                no_text = ~has_text(x_test["text"])
                text_figures["test_images_without_text"] = int(no_text.sum())
                if no_text.any():
                    text_figures["test_macro_auc_pr_images_without_text"] = metrics.evaluate(
                        y_test[no_text], p_test[no_text], thresholds, names)["macro_auc_pr"]
                if inputs == "image+text":
                    blank = predict_probs(export, {**x_test, "text": np.zeros_like(x_test["text"])}, batch)
                    text_figures["test_macro_auc_pr_text_removed"] = metrics.evaluate(
                        y_test, blank, thresholds, names)["macro_auc_pr"]
                    blind = predict_probs(export, {**x_test, "image": np.zeros_like(x_test["image"]),
                                                   "has_image": np.zeros_like(x_test["has_image"])}, batch)
                    text_figures["test_macro_auc_pr_image_removed"] = metrics.evaluate(
                        y_test, blind, thresholds, names)["macro_auc_pr"]
            del x_test

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
                    **text_figures,
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
                arts = pyfunc.artifacts_for(d, export, names, slugs, thresholds, tax.version, inputs, encoding)
                info = pyfunc.log_model("model", arts, pyfunc.signature(slugs, inputs, encoding),
                                        pyfunc.input_example(inputs, size, encoding))
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
        "test_macro_auc_pr": macro_ap,
        "test_mean_prevalence": prevalence,
        "test_mean_prevalence_positive_labels": chance,
        "beats_chance": beats_chance,
        "test_fingerprint": fingerprint,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "train_images_per_s": round(train_ips, 1),
        "predict_images_per_s": round(predict_ips, 1),
        "distribution": distribution,
        "backend": keras.backend.backend(),
        "model_inputs": inputs,  # ("inputs" is the stage record's lineage)
        **text_figures,
        **{f"n_{k}": v for k, v in counts.items()},
    }
    # The run is FINISHED here: only now may the registry and its aliases change.
    reg = registry.register_and_promote(
        settings, run_id, logged_model_uri, macro_ap, fingerprint, compared,
        tags={"run_id": run_id, "taxonomy": tax.version, "beats_chance": beats_chance},
    )
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
