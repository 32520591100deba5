"""Wall-clock of one experiment's stage 1, end to end: dataset preparation, decoding, training.

Runs the same package calls as the workflow's `prepare_dataset` rule and its `train` rule for stage 1, without
Snakemake, and prints where the time went: preparing the images, then stage 1's training
epochs and validation passes (from history.csv), and the rest (decoding, set-up, checkpoints).
Example, the Market-size preset on a GPU:

    python benchmarks/stage1_time.py configs/synthetic_market_size.yaml --workers 16

Several config files merge in order, as Snakemake merges its `--configfile`s; the "fast"
preset is such an overlay:

    python benchmarks/stage1_time.py configs/synthetic_market_size.yaml configs/synthetic_market_size_fast.yaml

`--epochs N` trains N epochs instead of the configured number (the learning-rate schedule is
left as configured, so its later milestones are not reached: that does not change the cost of
an epoch) and also prints the projection
to the configured number: the first epoch (with its warm-up and compiling) plus the later ones'
mean time for each remaining epoch, plus the configured number of validation passes at the
measured cost of one, plus the one-off rest. `--set KEY=VALUE` changes
a stage-1 setting for this run (YAML value, dots for nested keys), checked like the config file:

    python benchmarks/stage1_time.py configs/synthetic_market_size.yaml --set compile=true

With `compile`, epoch 1 includes compiling, unless torch.compile's on-disk cache already holds
the same graphs (the workflow keeps it in `compile_cache`): run twice with the same fresh
TORCHINDUCTOR_CACHE_DIR to see epoch 1 cold, then warm.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from clusteralign.config import ConfigError, build_experiments, deep_merge
from clusteralign.data.dataset_config import DatasetConfig
from clusteralign.pipeline.prepare import prepare_dataset
from clusteralign.train.compile_cache import ENV
from clusteralign.train.trainer import StageSpec, train_stage

from bench_args import positive_int, read_workflow_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, nargs="+",
                   help="workflow config files, merged in order (e.g. configs/synthetic_market_size.yaml)")
    p.add_argument("--experiment", help="experiment name (default: the config's only experiment)")
    p.add_argument("--epochs", type=positive_int, help="train this many epochs instead of the configured number")
    p.add_argument("--work-dir", type=Path, default=Path("results/benchmarks/stage1_time"))
    p.add_argument("--workers", type=positive_int, default=4, help="processes that render a synthetic set")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a stage-1 setting, e.g. compile=true or optimizer.lr=7e-4 (repeatable)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config: dict = {}
    for path in args.config:
        config = deep_merge(config, read_workflow_config(p, path))
    names = list(config.get("experiments") or {})
    name = args.experiment or (names[0] if len(names) == 1 else None)
    if name not in names:
        sources = " + ".join(map(str, args.config))
        raise ConfigError(f"{sources}: give --experiment, one of {', '.join(names) or '(none)'}")
    for override in args.overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            p.error(f"--set {override!r}: expected KEY=VALUE")
        tree = yaml.safe_load(value)
        for part in reversed(["stage1", *key.split(".")]):
            tree = {part: tree}
        if isinstance(config["experiments"][name], dict):  # else build_experiments says what is wrong
            config["experiments"][name] = deep_merge(config["experiments"][name], tree)
    exp = build_experiments(config)[name]
    stage = exp.stage1
    configured = stage.epochs
    if args.epochs is not None:
        stage = dataclasses.replace(stage, epochs=args.epochs)

    work = args.work_dir / name
    t0 = time.perf_counter()
    dataset = DatasetConfig.from_mapping(exp.dataset, config["datasets"][exp.dataset])
    manifest = prepare_dataset(dataset, work / "dataset", work / "manifest.csv", workers=args.workers)
    t_prepare = time.perf_counter() - t0

    out = work / "stage1"
    # A fresh run every time: a leftover checkpoint would be resumed and time nothing.
    (out / "checkpoints" / "last.pt").unlink(missing_ok=True)
    t0 = time.perf_counter()
    train_stage(StageSpec("stage1", manifest, exp.model, stage, exp.features, exp.validation, out))
    t_stage = time.perf_counter() - t0

    history = pd.read_csv(out / "history.csv")
    train_s = float(history["train_seconds"].sum())
    evaluated = history["mAP"].notna()
    eval_s = float(history.loc[evaluated, "eval_seconds"].sum())
    other_s = t_stage - train_s - float(history["eval_seconds"].sum())
    n_train = int((manifest["split"] == "train").sum())
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and stage.device != "cpu" else "CPU"
    print()
    print(f"device              {device}")
    print(f"experiment          {name}: {exp.model.family}/{exp.model.backbone}, {n_train} training images, "
          f"batch {stage.num_identities}x{stage.num_instances}, lr {stage.optimizer.lr:g}, "
          f"input {stage.augment.height}x{stage.augment.width}, "
          f"amp {stage.amp}, channels_last {stage.channels_last}, compile {stage.compile}, "
          f"cuda_graph {stage.cuda_graph}, deterministic {stage.deterministic}")
    print(f"prepare dataset     {t_prepare:8.1f} s")
    print(f"stage 1             {t_stage:8.1f} s for {stage.epochs} epochs")
    print(f"  training          {train_s:8.1f} s  ({train_s / stage.epochs:.2f} s/epoch, "
          f"median {history['images_per_second'].median():.0f} img/s)")
    seconds = history["train_seconds"]
    if len(seconds) > 1:
        # Epoch 1 alone pays for the warm-up, compiling (or reading the compile cache) and capture.
        cache = f"; compile cache {os.environ.get(ENV, 'torch default')}" if stage.compile else ""
        later = float(seconds.iloc[1:].mean())
        print(f"    epoch 1         {float(seconds.iloc[0]):8.1f} s  (later epochs {later:.2f} s each{cache})")
    extra = " with anchor diagnostics" if stage.anchor_diagnostics else ""
    print(f"  validation        {eval_s:8.1f} s  ({int(evaluated.sum())} passes{extra}, "
          f"{eval_s / max(int(evaluated.sum()), 1):.1f} s each)")
    print(f"  everything else   {other_s:8.1f} s  (decoding, model set-up, checkpoints)")
    last = history[evaluated].iloc[-1]
    print(f"  last validation   epoch {int(last['epoch'])}: R1 {100 * last['R1']:.1f}  mAP {100 * last['mAP']:.1f}")
    if stage.epochs != configured:
        per_pass = eval_s / max(int(evaluated.sum()), 1)
        passes = sum(1 for e in range(1, configured + 1)
                     if e == configured or (stage.eval_every > 0 and e % stage.eval_every == 0))
        # The first epoch pays once for warm-up, compiling and graph capture: scale the others.
        train_full = (float(seconds.iloc[0]) + float(seconds.iloc[1:].mean()) * (configured - 1)
                      if len(seconds) > 1 else train_s * configured)
        projected = train_full + per_pass * passes + other_s
        print(f"projected           {projected:8.1f} s for the configured {configured} epochs: training "
              f"{train_full:.1f} s + {passes} validation passes {per_pass * passes:.1f} s + the rest {other_s:.1f} s")
    if not math.isfinite(history["loss_total"].iloc[-1]):
        raise SystemExit("training diverged: the last epoch's loss is not finite")


if __name__ == "__main__":
    main()
