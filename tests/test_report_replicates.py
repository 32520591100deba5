"""The report's replicate statistics: per-replicate rows, mean ± sd, paired intervals, the verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusteralign.report import ArtifactError, load_replicates, write_report
from clusteralign.report.artifacts import CONTROL, read_per_query
from clusteralign.report.replicates import comparisons, summary_frame, verdict

STAGES = ("stage1", "stage2", CONTROL)
NUM_QUERIES = 200


def _per_query(rng: np.random.Generator, skill: float) -> pd.DataFrame:
    """Per-query results whose AP rises with `skill`; the last query has no true match."""
    ap = np.clip(rng.beta(2, 2, NUM_QUERIES) + skill, 0.01, 1.0)
    first = np.where(ap > 0.5, 0, rng.integers(1, 9, NUM_QUERIES))
    first[-1], ap[-1] = -1, np.nan
    inp = np.where(first >= 0, ap * 0.6, np.nan)
    return pd.DataFrame({"path": [f"query/{i:04d}.jpg" for i in range(NUM_QUERIES)], "pid": np.arange(NUM_QUERIES) + 1,
                         "camid": 1, "first_rank": first, "ap": ap, "inp": inp})


def _write_stage(d: Path, frame: pd.DataFrame, dataset: str = "synthetic") -> None:
    (d / "eval" / dataset).mkdir(parents=True)
    _write_evaluation(d / "eval" / dataset, frame)
    pd.DataFrame({"epoch": [1, 2], "loss_total": [2.0, 1.0]}).to_csv(d / "history.csv", index=False)
    (d / "anchors.json").write_text(json.dumps({"anchor_dist_own": 0.5, "anchor_dist_other": 1.0,
                                                "num_identities": 10}))


def _write_evaluation(d: Path, frame: pd.DataFrame) -> None:
    d.mkdir(parents=True, exist_ok=True)
    valid = frame["first_rank"] >= 0
    r1 = float((frame.loc[valid, "first_rank"] == 0).mean())
    metrics = {"R1": r1, "R5": r1, "R10": r1, "mAP": float(frame.loc[valid, "ap"].mean()),
               "mINP": float(frame.loc[valid, "inp"].mean()), "cmc": [r1] * 10, "num_valid": int(valid.sum()),
               "num_skipped": int((~valid).sum())}
    (d / "metrics.json").write_text(json.dumps(metrics))
    frame.to_csv(d / "per_query.csv", index=False)
    (d / "ranking.json").write_text(json.dumps({"examples": []}))


def _experiment(root: Path, replicates: int, gain: float, name: str = "exp"):
    """Replicates whose stage 2 beats the control by `gain` in AP per query, stage 1 by more."""
    description = {"name": name, "dataset": "synthetic", "model": {"backbone": "resnet18"}, "control": True,
                   "replicates": replicates, "stage1": {"seed": 0}, "stage2": {"seed": 0}}
    dirs = []
    for r in range(replicates):
        rng = np.random.default_rng(r)
        base = _per_query(rng, 0.0)
        frames = {"stage1": base, CONTROL: base.assign(ap=base["ap"] + 0.01),
                  "stage2": base.assign(ap=base["ap"] + 0.01 + gain * (1 + 0.1 * r))}
        rep = {}
        for stage in STAGES:
            d = root / name / f"rep{r}" / stage
            _write_stage(d, frames[stage].assign(ap=frames[stage]["ap"].clip(upper=1.0)))
            rep[stage] = d
        dirs.append(rep)
    return load_replicates(name, description, dirs)


def test_several_replicates_give_t_intervals_and_a_verdict(tmp_path):
    rexp = _experiment(tmp_path, replicates=3, gain=0.03)
    comps = comparisons(rexp)
    iv = comps[CONTROL]["mAP"]
    assert iv.method == "t" and iv.n == 3 and iv.excludes_zero and iv.low > 0
    maps = {s: [rep.metrics[s]["mAP"] for rep in rexp.replicates] for s in ("stage2", CONTROL)}
    assert iv.estimate == pytest.approx(np.mean(np.subtract(maps["stage2"], maps[CONTROL])))
    sentence = verdict(rexp, comps)
    assert sentence.startswith("exp: the anchor loss's mAP gain over the control is distinguishable from zero")
    assert "Student t over 3 replicates" in sentence

    _, md = write_report([rexp], {}, tmp_path / "r.html", tmp_path / "r.md", title="t")
    text = md.read_text(encoding="utf-8")
    assert "### Replicates" in text and text.count("| mean ± sd |") == 3
    assert all(f"| {r} | Stage 1 (baseline) |" in text for r in range(3))
    assert "### Paired differences" in text and "95% Student t over the 3 replicates" in text
    assert "### Stage 1 vs stage 2 vs control (replicate 0)" in text
    assert text.count(sentence.replace("[", "\\[").replace("]", "\\]")) == 2  # the summary and the section


def test_no_gain_is_not_distinguishable_from_zero(tmp_path):
    rexp = _experiment(tmp_path, replicates=3, gain=0.0)
    sentence = verdict(rexp, comparisons(rexp))
    assert "is not distinguishable from zero at the 95% level" in sentence


def test_a_single_run_gets_a_bootstrap_over_queries(tmp_path):
    rexp = _experiment(tmp_path, replicates=1, gain=0.03)
    comps = comparisons(rexp)
    iv = comps[CONTROL]["mAP"]
    assert iv.method == "bootstrap" and iv.n == NUM_QUERIES - 1
    _, md = write_report([rexp], {}, tmp_path / "r.html", tmp_path / "r.md")
    text = md.read_text(encoding="utf-8")
    assert "paired bootstrap over the 199 scored queries of this single run (1,000 draws" in text
    assert "not how much training varies from seed to seed" in text
    assert "### Result" in text and "mean ± sd" not in text


def test_summary_frame_has_a_row_per_replicate_and_arm(tmp_path):
    rexps = [_experiment(tmp_path, 2, 0.01, "a"), _experiment(tmp_path, 1, 0.0, "b")]
    frame = summary_frame(rexps)
    assert len(frame) == 3 * 2 + 3 * 1
    assert list(frame.columns[:6]) == ["experiment", "dataset", "test_dataset", "replicate", "arm", "seed"]
    assert set(frame["test_dataset"]) == {"synthetic"}
    row = frame[(frame.experiment == "a") & (frame.replicate == 1) & (frame.arm == "stage2")].iloc[0]
    assert row["seed"] == 1 and row["mAP"] == rexps[0].replicates[1].metrics["stage2"]["mAP"]


def test_replicate_folders_must_match_the_description(tmp_path):
    rexp = _experiment(tmp_path, replicates=2, gain=0.0)
    dirs = [rep.stage_dirs for rep in rexp.replicates]
    with pytest.raises(ArtifactError, match=r"replicates: 3, but folders of 2 replicate\(s\)"):
        load_replicates("exp", {**rexp.description, "replicates": 3}, dirs)


def test_malformed_per_query_file_is_named(tmp_path):
    frame = _per_query(np.random.default_rng(0), 0.0)
    path = tmp_path / "per_query.csv"
    frame.drop(columns="ap").to_csv(path, index=False)
    with pytest.raises(ArtifactError, match=r"per_query\.csv: missing column\(s\) ap"):
        read_per_query(path)
    frame.assign(ap=frame["ap"] * 3).to_csv(path, index=False)
    with pytest.raises(ArtifactError, match="'ap' must hold fractions"):
        read_per_query(path)
    frame.to_csv(path, index=False)
    assert math.isnan(read_per_query(path)["ap"].iloc[-1])


def test_cross_domain_evaluations_get_their_table_and_summary_rows(tmp_path):
    rexp = _experiment(tmp_path, replicates=2, gain=0.0)
    description = {**rexp.description, "test_datasets": ["other"]}
    for r, rep in enumerate(rexp.replicates):
        for stage, d in rep.stage_dirs.items():
            _write_evaluation(d / "eval" / "other", _per_query(np.random.default_rng(10 + r), -0.3))
    rexp = load_replicates("exp", description, [rep.stage_dirs for rep in rexp.replicates])
    assert set(rexp.first.cross) == {"other"}
    frame = summary_frame([rexp])
    assert len(frame) == 2 * 3 * 2 and set(frame["test_dataset"]) == {"synthetic", "other"}
    other = frame[(frame.test_dataset == "other") & (frame.replicate == 1) & (frame.arm == "stage1")].iloc[0]
    assert other["mAP"] == rexp.replicates[1].cross["other"]["stage1"]["mAP"]
    _, md = write_report([rexp], {}, tmp_path / "r.html", tmp_path / "r.md")
    text = md.read_text(encoding="utf-8")
    table = text[text.index("### Cross-domain"):].split("\n\n")[1].splitlines()
    assert table[0] == ("|  | R1 (%) on synthetic (trained on) | mAP (%) on synthetic (trained on) | R1 (%) on other | "
                        "mAP (%) on other |")
    assert [row.split(" | ")[0] for row in table[2:]] == ["| Stage 1 (baseline)", "| Stage 2 (anchor)",
                                                         "| Stage 2 without anchor loss (control)"]
    maps = [rep.cross["other"]["stage1"]["mAP"] for rep in rexp.replicates]
    assert f"{100 * np.mean(maps):.1f} ± {100 * np.std(maps, ddof=1):.1f} |" in table[2]
