"""Heads on stored features against a fine-tune, from the same starting point, on the same split (issue 43).

On a lake where ``make demo DEMO_ARGS="--runs 2"`` (or the demo with another data root) ran
two nights: a model fine-tuned on night 1's labels is the backbone (the demo's version 1). For
each taxonomy and seed, on night 2's dump, ``train`` runs twice on one split: ``heads`` on the
backbone's stored features (``embed.backbone_uri`` pinned to that version), and ``finetune``
with its image tower started from the same version (``train.init_from``). For ``v1.4`` the
label, wit and shard stages run first (the store already holds every image). Prints test macro
AUC(PR) and wall time per run, and heads / finetune per taxonomy.

    .venv/bin/python benchmarks/heads_quality.py --data-root data --state-dir .state --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from devtools.demo import DEMO_USER_AGENT, SECOND_DUMP_DATE, TRAINING_ENV  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--state-dir", default=".state")
    p.add_argument("--dump-date", default=SECOND_DUMP_DATE)
    p.add_argument("--backbone", default="1", help="the registered v1.3 version whose tower is the backbone")
    p.add_argument("--taxonomies", default="v1.3,v1.4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--heuristics", default="refined-rules")
    p.add_argument("--mirror", default="", help="the sample's image server (python -m devtools serve), for the "
                                                "few images another taxonomy's shard run still wants")
    args = p.parse_args(argv)

    from pipeline.config import load_settings
    from training import embed, train

    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in TRAINING_ENV.items()}}
    base = {"paths.data_root": args.data_root, "paths.state_dir": args.state_dir, "paths.dump_date": args.dump_date,
            "paths.dumps_dir": f"{args.data_root}/dumps", "paths.wit_dir": f"{args.data_root}/wit",
            "label.heuristics": args.heuristics, "fetch.dumps_url": "", "fetch.wit_url": "",
            "shard.user_agent": DEMO_USER_AGENT, "shard.mirror_url": args.mirror}
    backbone = f"models:/wiki-image-topics-v1.3/{args.backbone}"
    rows = []
    for taxonomy in args.taxonomies.split(","):
        common = {**base, "label.taxonomy": taxonomy, "embed.backbone_uri": backbone}
        if taxonomy != "v1.3":  # its labels, WIT rows and image index; no image is downloaded again
            for stage in ("label", "wit", "shard"):
                subprocess.run([sys.executable, "-m", "pipeline", stage, *sum(
                    (["--set", f"{k}={v}"] for k, v in common.items()), [])], check=True, env=env)
        s = load_settings(common, environ=env)
        print(json.dumps({"embed": embed.run(s)}, default=str), flush=True)
        for seed in args.seeds.split(","):
            for mode, extra in (("heads", {}), ("finetune", {"train.init_from": backbone})):
                s = load_settings({**common, "train.mode": mode, "train.seed": seed, **extra}, environ=env)
                t0 = time.perf_counter()
                summary = train.run(s)
                rows.append({"taxonomy": taxonomy, "seed": int(seed), "mode": mode,
                             "test_macro_auc_pr": round(summary["test_macro_auc_pr"], 4),
                             "seconds": round(time.perf_counter() - t0, 1), "epochs_run": summary["epochs_run"],
                             "test_fingerprint": summary["test_fingerprint"]})
                print(json.dumps(rows[-1]), flush=True)
    for taxonomy in args.taxonomies.split(","):
        mine = [r for r in rows if r["taxonomy"] == taxonomy]
        assert len({r["test_fingerprint"] for r in mine}) == 1, "one split per taxonomy"
        mean = {m: sum(r["test_macro_auc_pr"] for r in mine if r["mode"] == m) / max(1, sum(
            r["mode"] == m for r in mine)) for m in ("heads", "finetune")}
        secs = {m: sum(r["seconds"] for r in mine if r["mode"] == m) for m in ("heads", "finetune")}
        print(json.dumps({"taxonomy": taxonomy, "mean_test_macro_auc_pr": mean,
                          "heads_over_finetune": round(mean["heads"] / mean["finetune"], 3),
                          "train_seconds": secs}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
