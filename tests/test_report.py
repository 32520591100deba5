"""The report: artifact loading, figures and the HTML/Markdown pages, on two small fake experiments.

A second report gives "alpha" the stage-2 control run (stage 2 without anchor loss) and leaves
"beta" without one.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clusteralign.config import RANKING_EXAMPLES, ConfigError, ReportConfig, build_experiment, from_dict, to_dict
from clusteralign.report import (
    CONTROL,
    FIGURE_KEYS,
    ArtifactError,
    ArtifactMissingError,
    ReportInputError,
    build_report,
    combined_history,
    load_experiment,
    make_figures,
    retrieval_grid,
    write_report,
)
from clusteralign.report.figures import stage_boundaries

# Final metrics of the two experiments: "alpha" gains from stage 2, "beta" loses mAP.
FINAL = {
    "alpha": {"stage1": {"R1": 0.8012, "mAP": 0.6234, "mINP": 0.3101}, "stage2": {"R1": 0.8157, "mAP": 0.6571, "mINP": 0.3420}},
    "beta": {"stage1": {"R1": 0.7000, "mAP": 0.5000, "mINP": 0.2000}, "stage2": {"R1": 0.7000, "mAP": 0.4870, "mINP": 0.1900}},
}
# alpha's control: better than stage 1 (longer training helps a little), worse than stage 2.
FINAL_CONTROL = {"R1": 0.8049, "mAP": 0.6318, "mINP": 0.3187}
ANCHORS = {"stage1": (0.82, 1.31), "stage2": (0.47, 1.12), CONTROL: (0.74, 1.27)}
DATASETS = {"alpha": "market1501", "beta": "duke <test & co>"}
EPOCHS = {"stage1": 6, "stage2": 4, CONTROL: 4}
IMAGES = [f"data/{pid:04d}_c{cam}_{i}.jpg" for pid in range(4) for cam in (1, 2) for i in range(2)]


def _image_pid(path: str) -> int:
    return int(Path(path).name[:4])


def _write_images(root: Path) -> None:
    rng = np.random.default_rng(7)
    for rel in IMAGES:
        # Head, torso and legs in colours of the identity, with mild sensor noise: a real JPEG.
        pid = _image_pid(rel)
        pixels = np.empty((32, 16, 3), dtype=np.int16)
        pixels[:8] = (230, 190, 160)
        pixels[8:20] = (60 * pid % 255, 120, 200 - 40 * pid)
        pixels[20:] = (40, 40 + 30 * pid, 90)
        pixels += rng.integers(-8, 9, size=pixels.shape)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / rel, format="JPEG", quality=85)


def _history(stage: str, rng: np.random.Generator, final: dict[str, float]) -> pd.DataFrame:
    n = EPOCHS[stage]
    epochs = np.arange(1, n + 1)
    rows = {"stage": stage, "epoch": epochs}
    rows["loss_ce"] = 3.0 * np.exp(-epochs / 3) + 0.1 + 0.01 * rng.random(n)
    if stage == "stage1":
        rows["loss_triplet"] = 0.8 * np.exp(-epochs / 2) + 0.05
        rows["lr"] = np.minimum(epochs / 3, 1.0) * 3.5e-4
    else:
        if stage == "stage2":  # the control trains with the anchor weight at 0: no anchor term
            rows["loss_anchor"] = 0.02 * np.exp(-epochs / 2) + 0.004
        rows["lr"] = np.full(n, 3.5e-6)
    rows["loss_total"] = sum(v for k, v in rows.items() if k.startswith("loss_"))
    rows["train_acc"] = np.linspace(0.2, 0.95, n)
    rows["train_seconds"] = np.full(n, 12.5)
    rows["images_per_second"] = np.full(n, 256.0)
    # Diagnostics and validation only on some epochs: NaN elsewhere, as the trainer writes them.
    diag = (epochs == n) if stage == "stage1" else np.ones(n, dtype=bool)
    own, other = ANCHORS[stage]
    rows["anchor_dist_own"] = np.where(diag, own + 0.05 * (n - epochs), np.nan)
    rows["anchor_dist_other"] = np.where(diag, other, np.nan)
    val = epochs % 2 == 0
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        value = final.get(key, min(1.0, final["R1"] + 0.1))
        rows[key] = np.where(val, value - 0.02 * (n - epochs), np.nan)
    return pd.DataFrame(rows)


def _cmc(r1: float, length: int = 20) -> list[float]:
    ranks = np.arange(length)
    return [float(v) for v in np.round(1.0 - (1.0 - r1) * np.exp(-ranks / 4.0), 6)]


def _ranking(rng: np.random.Generator) -> dict:
    examples = []
    for q in range(3):
        query = IMAGES[4 * q]
        gallery = []
        for k, idx in enumerate(rng.permutation(len(IMAGES))[:10]):
            path = IMAGES[idx]
            gallery.append({"path": path, "pid": _image_pid(path), "camid": 2, "distance": round(0.1 * (k + 1), 4),
                            "match": _image_pid(path) == _image_pid(query)})
        gallery[0]["match"], gallery[1]["match"] = True, False  # both colours appear in every row
        examples.append({"query": {"path": query, "pid": _image_pid(query), "camid": 1}, "gallery": gallery})
    return {"examples": examples}


def build_workspace(root: Path, control: tuple[str, ...] = ()) -> tuple[dict[str, dict], dict[str, dict[str, Path]]]:
    """Write images and both experiments' stage artifacts under `root`; returns descriptions and stage dirs.

    Experiments named in `control` get ``control: true`` and the artifacts of the control run.
    """
    _write_images(root)
    rng = np.random.default_rng(0)
    # The control draws from its own generator, so every other artifact is the same with or without it.
    control_rng = np.random.default_rng(1)
    descriptions, stage_dirs = {}, {}
    for name, final in FINAL.items():
        raw = {"dataset": DATASETS[name], "model": "r50",
               "stage1": {"epochs": EPOCHS["stage1"]}, "stage2": {"epochs": EPOCHS["stage2"]}}
        if name in control:
            raw["control"] = True
            final = {**final, CONTROL: FINAL_CONTROL}
        descriptions[name] = to_dict(build_experiment(name, raw, {"r50": {"backbone": "resnet50"}}))
        stage_dirs[name] = {}
        for stage in final:
            stage_rng = control_rng if stage == CONTROL else rng
            d = Path("results") / name / stage
            (root / d).mkdir(parents=True)
            _history(stage, stage_rng, final[stage]).to_csv(root / d / "history.csv", index=False)
            cmc = _cmc(final[stage]["R1"])
            metrics = {**final[stage], "R1": cmc[0], "R5": cmc[4], "R10": cmc[9], "cmc": cmc, "num_valid": 40,
                       "num_skipped": 2, "rerank": False, "metric": "euclidean", "num_query": 42, "num_gallery": 300}
            (root / d / "metrics.json").write_text(json.dumps(metrics))
            own, other = ANCHORS[stage]
            (root / d / "anchors.json").write_text(
                json.dumps({"anchor_dist_own": own, "anchor_dist_other": other, "num_identities": 4}))
            (root / d / "ranking.json").write_text(json.dumps(_ranking(stage_rng)))
            stage_dirs[name][stage] = d
    return descriptions, stage_dirs


def run_report(root: Path, control: tuple[str, ...] = ()) -> dict:
    """The workflow's report step, run inside `root` (image paths are relative to it)."""
    descriptions, stage_dirs = build_workspace(root, control)
    experiments = [load_experiment(n, descriptions[n], stage_dirs[n]) for n in FINAL]
    figures = {exp.name: make_figures(exp, Path("results/report_figures") / exp.name) for exp in experiments}
    html_path, md_path = write_report(experiments, figures, "results/report.html", "results/report.md",
                                      title="ClusterAlign <test> report")
    return {"experiments": experiments, "figures": figures, "html": root / html_path, "md": root / md_path,
            "stage_dirs": stage_dirs, "descriptions": descriptions}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        out = run_report(root)
        out["root"] = root
        yield out


@pytest.fixture(scope="module")
def control_report(tmp_path_factory):
    """The report with alpha's control run (beta has none)."""
    root = tmp_path_factory.mktemp("control_report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        out = run_report(root, control=("alpha",))
        out["root"] = root
        yield out


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    descriptions, stage_dirs = build_workspace(tmp_path)
    return tmp_path, descriptions, stage_dirs


def _md_table_after(md: str, heading: str) -> list[list[str]]:
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        # Split on pipes that are not escaped; cells keep their Markdown escapes.
        table.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return table


# --------------------------------------------------------------------------- loading


def test_load_experiment_reads_every_stage(report):
    exp = report["experiments"][0]
    assert exp.name == "alpha" and exp.stages == ["stage1", "stage2"]
    assert list(exp.histories["stage1"]["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert "loss_anchor" in exp.histories["stage2"] and "loss_anchor" not in exp.histories["stage1"]
    assert exp.metrics["stage2"]["mAP"] == pytest.approx(0.6571)
    assert exp.anchors["stage1"]["anchor_dist_own"] == pytest.approx(0.82)
    assert len(exp.rankings["stage2"]["examples"]) == 3


def test_combined_history_puts_stage2_after_stage1(report):
    exp = report["experiments"][0]
    df = combined_history(exp)
    assert list(df["global_epoch"]) == list(range(1, 11))
    stage2 = df[df["stage"] == "stage2"]
    assert list(stage2["epoch"]) == [1, 2, 3, 4] and list(stage2["global_epoch"]) == [7, 8, 9, 10]
    assert stage_boundaries(exp) == [6.5]
    # Loss terms of one stage only are NaN on the other stage's rows, never zero-filled.
    assert df.loc[df["stage"] == "stage1", "loss_anchor"].isna().all()


@pytest.mark.parametrize("filename", ["history.csv", "metrics.json", "anchors.json", "ranking.json"])
def test_missing_artifact_names_the_file(workspace, filename):
    _, descriptions, stage_dirs = workspace
    missing = stage_dirs["alpha"]["stage2"] / filename
    missing.unlink()
    with pytest.raises(ArtifactMissingError, match=re.escape(str(missing))) as err:
        load_experiment("alpha", descriptions["alpha"], stage_dirs["alpha"])
    assert isinstance(err.value, FileNotFoundError)


def test_malformed_artifacts_name_the_file_and_the_problem(workspace):
    _, descriptions, stage_dirs = workspace
    d = stage_dirs["beta"]["stage1"]

    def load():
        return load_experiment("beta", descriptions["beta"], stage_dirs["beta"])

    history = pd.read_csv(d / "history.csv")
    history.drop(columns="loss_total").to_csv(d / "history.csv", index=False)
    with pytest.raises(ArtifactError, match=r"history\.csv: missing column 'loss_total'"):
        load()
    history.assign(mAP="high").to_csv(d / "history.csv", index=False)
    with pytest.raises(ArtifactError, match=r"history\.csv: column 'mAP' must be numeric"):
        load()
    history.to_csv(d / "history.csv", index=False)

    metrics = json.loads((d / "metrics.json").read_text())
    (d / "metrics.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"metrics\.json: is not valid JSON"):
        load()
    (d / "metrics.json").write_text(json.dumps({**metrics, "mAP": 62.3}))  # a percentage, not a fraction
    with pytest.raises(ArtifactError, match=r"metrics\.json: 'mAP' must be a fraction"):
        load()
    (d / "metrics.json").write_text(json.dumps(metrics))

    ranking = json.loads((d / "ranking.json").read_text())
    del ranking["examples"][1]["gallery"][3]["match"]
    (d / "ranking.json").write_text(json.dumps(ranking))
    with pytest.raises(ArtifactError, match=r"ranking\.json: examples\[1\]\.gallery\[3\] must be a mapping"):
        load()


def test_bad_stage_name_is_rejected(workspace):
    _, descriptions, stage_dirs = workspace
    with pytest.raises(ArtifactError, match="stage_dirs must map some of stage1, stage2"):
        load_experiment("alpha", descriptions["alpha"], {"stage3": stage_dirs["alpha"]["stage1"]})


# --------------------------------------------------------------------------- figures


def test_figures_are_valid_pngs(report):
    for name, paths in report["figures"].items():
        assert set(paths) == set(FIGURE_KEYS)
        for key, path in paths.items():
            with Image.open(path) as img:
                assert img.format == "PNG", (name, key)
                img.verify()
            assert path.stat().st_size < 300_000, (name, key)
            assert path.stat().st_mode & 0o777 == 0o644  # readable by whoever opens the report


def test_retrieval_grid_marks_correct_and_wrong_matches(report):
    path = report["figures"]["alpha"]["retrieval_stage1"]
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    assert {(34, 160, 60), (210, 40, 40), (40, 90, 200)} <= colours  # green, red, query blue frames
    # A row with fewer matches draws fewer green pixels: count frames per colour on a one-row grid.
    exp = report["experiments"][0]
    one = dict(exp.rankings["stage1"])
    one["examples"] = one["examples"][:1]
    gallery = one["examples"][0]["gallery"]
    exp_one = type(exp)(exp.name, exp.description, exp.histories, exp.metrics, exp.anchors, {"stage1": one})
    out = retrieval_grid(exp_one, "stage1", report["root"] / "one_row.png")
    with Image.open(out) as img:
        px = np.asarray(img.convert("RGB"))
    green = np.all(px == (34, 160, 60), axis=-1).sum()
    red = np.all(px == (210, 40, 40), axis=-1).sum()
    n_match = sum(g["match"] for g in gallery)
    frame = green / n_match  # every frame has the same number of border pixels
    assert red == pytest.approx(frame * (len(gallery) - n_match))


def test_missing_retrieval_image_names_it(workspace):
    root, descriptions, stage_dirs = workspace
    exp = load_experiment("alpha", descriptions["alpha"], stage_dirs["alpha"])
    gone = exp.rankings["stage2"]["examples"][0]["gallery"][0]["path"]
    (root / gone).unlink()
    with pytest.raises(ArtifactMissingError, match=re.escape(gone)) as err:
        retrieval_grid(exp, "stage2", root / "r.png")
    assert "ranking.json" in str(err.value)
    assert not (root / "r.png").exists()


# --------------------------------------------------------------------------- the page


def test_html_is_self_contained(report):
    page = report["html"].read_text(encoding="ascii")
    imgs = re.findall(r"<img\b[^>]*>", page)
    assert len(imgs) == 2 * len(FIGURE_KEYS)
    for tag in imgs:
        src = re.search(r'src="([^"]*)"', tag).group(1)
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            assert img.format == "PNG"
    assert re.findall(r'src="(?!data:)', page) == []
    for external in ("http://", "https://", "file:", "<link", "<script", "url("):
        assert external not in page
    assert str(report["root"]) not in page  # no absolute paths either


def test_html_shows_stage_deltas_coloured_by_sign(report):
    page = report["html"].read_text()
    a, b = FINAL["alpha"], FINAL["beta"]
    d_map_a = f"{100 * (a['stage2']['mAP'] - a['stage1']['mAP']):+.1f}"
    d_map_b = f"{100 * (b['stage2']['mAP'] - b['stage1']['mAP']):+.1f}"
    assert d_map_a == "+3.4" and d_map_b == "-1.3"
    assert f'<td class="num pos">{d_map_a}</td>' in page
    assert f'<td class="num neg">{d_map_b}</td>' in page
    assert '<td class="num">0.0</td>' in page  # beta's R1 did not move: neutral, unsigned
    assert f'<td class="num">{100 * a["stage2"]["mINP"]:.1f}</td>' in page
    # Anchor distances: only the scale-free own/other ratio is judged; it fell, which is better.
    (own1, other1), (own2, other2) = ANCHORS["stage1"], ANCHORS["stage2"]
    assert f'<td class="num pos">{own2 / other2 - own1 / other1:+.3f}</td>' in page
    assert f'<td class="num">{own2 - own1:+.4g}</td>' in page
    assert "How to read this report" in page and "nearest other anchor" in page


def test_html_escapes_text(report):
    page = report["html"].read_text()
    assert "duke &lt;test &amp; co&gt;" in page and "<test" not in page
    assert "<title>ClusterAlign &lt;test&gt; report</title>" in page


def test_markdown_tables_match_the_artifacts(report):
    md = report["md"].read_text(encoding="utf-8")
    summary = _md_table_after(md, "## Summary")
    assert summary[0][:3] == ["Experiment", "Dataset", "Model"] and summary[0][-1] == "\u0394mAP (pp)"
    assert summary[1] == ["---"] * 3 + ["---:"] * 6
    d_r1 = f"{100 * (FINAL['alpha']['stage2']['R1'] - FINAL['alpha']['stage1']['R1']):+.1f}"
    assert summary[2] == ["alpha", "market1501", "resnet50", "80.1", "62.3", "81.6", "65.7", d_r1, "+3.4"]
    assert summary[3] == ["beta", "duke \\<test & co\\>", "resnet50", "70.0", "50.0", "70.0", "48.7", "0.0", "-1.3"]
    assert all(len(row) == 9 for row in summary)

    setup = _md_table_after(md, "## Experiment alpha")  # the first table of a section: its setup
    assert setup[0] == ["Setting", "Value"] and setup[2] == ["Dataset", "market1501"]
    assert setup[5][0] == "Stage 2 (anchor)" and "anchor loss mse \u00d71" in setup[5][1]
    per_stage = _md_table_after(md[md.index("## Experiment alpha"):], "### Stage 1 vs stage 2")
    assert per_stage[0] == ["", "R1 (%)", "R5 (%)", "R10 (%)", "mAP (%)", "mINP (%)"]
    cmc1, cmc2 = _cmc(0.8012), _cmc(0.8157)
    assert per_stage[2][1:] == [f"{100 * v:.1f}" for v in (cmc1[0], cmc1[4], cmc1[9], 0.6234, 0.3101)]
    final2 = FINAL["alpha"]["stage2"]
    assert per_stage[3][1:] == [f"{100 * v:.1f}" for v in (cmc2[0], cmc2[4], cmc2[9], final2["mAP"], final2["mINP"])]
    assert per_stage[4][0].startswith("\u0394 stage 2")
    assert per_stage[4][4] == "+3.4" and per_stage[4][5] == f"{100 * (0.3420 - 0.3101):+.1f}"

    anchors = _md_table_after(md[md.index("## Experiment alpha"):], "### Anchor diagnostics")
    (own1, other1), (own2, other2) = ANCHORS["stage1"], ANCHORS["stage2"]
    assert anchors[2][1:4] == [f"{own1:.4g}", f"{other1:.4g}", f"{own1 / other1:.3f}"]
    assert anchors[3][1:4] == [f"{own2:.4g}", f"{other2:.4g}", f"{own2 / other2:.3f}"]
    assert anchors[4][1] == f"{own2 - own1:+.4g}"


def test_markdown_links_figures_relative_to_its_folder(report):
    md = report["md"].read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 2 * len(FIGURE_KEYS)
    for link in links:
        assert not Path(link).is_absolute() and link.startswith("report_figures/")
        assert (report["md"].parent / link).is_file()


def test_report_is_byte_identical_on_rerun(report, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    again = run_report(tmp_path)
    assert again["html"].read_bytes() == report["html"].read_bytes()
    assert again["md"].read_bytes() == report["md"].read_bytes()
    for name, paths in again["figures"].items():
        for key, path in paths.items():
            assert (tmp_path / path).read_bytes() == (report["root"] / report["figures"][name][key]).read_bytes()


def test_build_report_finds_each_stage_by_its_inputs(report, tmp_path, monkeypatch):
    # What the workflow's report step calls, with the report rule's named inputs.
    monkeypatch.chdir(tmp_path)
    descriptions, stage_dirs = build_workspace(tmp_path)
    inputs = {f"{name}/{stage}/{file}": str(d / file) for name, dirs in stage_dirs.items() for stage, d in dirs.items()
              for file in ("history.csv", "metrics.json", "anchors.json", "ranking.json")}
    html, md = build_report([descriptions[n] for n in FINAL], inputs, "results/report.html", "results/report.md",
                            ReportConfig(title="ClusterAlign <test> report"))
    assert html.read_bytes() == report["html"].read_bytes()  # the figures are inlined, wherever they lie
    for name in FINAL:
        assert sorted(p.stem for p in (tmp_path / "results/report" / name).iterdir()) == sorted(FIGURE_KEYS)
    with pytest.raises(ArtifactError, match="report input 'alpha/metrics.json'"):
        build_report([], {"alpha/metrics.json": "x"}, "r.html", "r.md", ReportConfig())


def test_report_config_caps_the_examples_at_what_the_evaluation_keeps():
    with pytest.raises(ConfigError, match=rf"report.retrieval_examples: must be in \[1, {RANKING_EXAMPLES}\], got 21"):
        from_dict(ReportConfig, {"retrieval_examples": RANKING_EXAMPLES + 1}, "report")


def test_write_report_rejects_figures_of_unknown_experiments(report, tmp_path):
    exps = report["experiments"]
    with pytest.raises(ReportInputError, match="gamma"):
        write_report(exps, {"gamma": {}}, tmp_path / "r.html", tmp_path / "r.md")
    with pytest.raises(ReportInputError, match="unknown figure key"):
        write_report(exps, {"alpha": {"loss_plot": tmp_path / "x.png"}}, tmp_path / "r.html", tmp_path / "r.md")
    with pytest.raises(ArtifactMissingError, match=re.escape(str(tmp_path / "nope.png"))):
        write_report(exps, {"alpha": {"cmc": tmp_path / "nope.png"}}, tmp_path / "r.html", tmp_path / "r.md")
    assert not (tmp_path / "r.html").exists()


def test_report_without_stage2_shows_dashes(report, tmp_path):
    exp = report["experiments"][0]
    only1 = type(exp)(exp.name, exp.description, {"stage1": exp.histories["stage1"]}, {"stage1": exp.metrics["stage1"]},
                      {"stage1": exp.anchors["stage1"]}, {})
    _, md_path = write_report([only1], {}, tmp_path / "r.html", tmp_path / "r.md")
    row = _md_table_after(md_path.read_text(encoding="utf-8"), "## Summary")[2]
    assert row[3:5] == ["80.1", "62.3"] and row[5:] == ["\u2014"] * 4
    assert not math.isnan(float(row[3]))


def test_partial_description_is_shown_as_given(report, tmp_path):
    exp = report["experiments"][0]
    raw = {"name": "alpha", "dataset": "market1501", "model": "r50-ibn",
           "stage2": {"epochs": 40, "optimizer": {"lr": "3.5e-6"}, "loss": {"anchor_weight": 0.5, "anchor_kind": "l1"}}}
    partial = type(exp)(exp.name, raw, exp.histories, exp.metrics, exp.anchors, exp.rankings)
    _, md_path = write_report([partial], {}, tmp_path / "r.html", tmp_path / "r.md")
    md = md_path.read_text(encoding="utf-8")
    assert _md_table_after(md, "## Summary")[2][2] == "r50-ibn"
    setup = {row[0]: row[1] for row in _md_table_after(md, "### Setup")[2:]}
    assert setup["Model"] == "r50-ibn"
    assert setup["Stage 2 (anchor)"].startswith("40 epochs \u00b7 lr 3.5e-6 \u00b7 anchor loss l1 \u00d70.5")
    assert "trained 6 epochs in 75 s (256 img/s)" in setup["Stage 1 (baseline)"]


# --------------------------------------------------------------------------- the stage-2 control run

CONTROL_ROW = "Stage 2 without anchor loss (control)"
CONTROL_GREY = (127, 127, 127)  # the control's colour in the CMC and anchor figures


def _section(md: str, name: str) -> str:
    start = md.index(f"## Experiment {name}")
    end = md.find("\n## Experiment ", start + 1)
    return md[start:] if end < 0 else md[start:end]


def _grey_pixels(path: Path) -> int:
    with Image.open(path) as img:
        return int(np.all(np.asarray(img.convert("RGB")) == CONTROL_GREY, axis=-1).sum())


def test_control_is_loaded_only_where_the_description_asks(control_report):
    alpha, beta = control_report["experiments"]
    assert alpha.description["control"] is True and alpha.has_control
    assert alpha.stages == ["stage1", "stage2", CONTROL]
    assert "loss_anchor" not in alpha.histories[CONTROL]
    assert alpha.metrics[CONTROL]["mAP"] == pytest.approx(FINAL_CONTROL["mAP"])
    assert alpha.anchors[CONTROL]["anchor_dist_own"] == pytest.approx(ANCHORS[CONTROL][0])
    assert beta.description["control"] is False and not beta.has_control and beta.stages == ["stage1", "stage2"]


def test_control_epochs_follow_stage1_like_stage2(control_report):
    exp = control_report["experiments"][0]
    df = combined_history(exp)
    stage2, control = df[df["stage"] == "stage2"], df[df["stage"] == CONTROL]
    assert list(control["epoch"]) == [1, 2, 3, 4]
    assert list(control["global_epoch"]) == list(stage2["global_epoch"]) == [7, 8, 9, 10]
    assert stage_boundaries(exp) == [6.5]  # one boundary: the control does not start a third stage


@pytest.mark.parametrize("filename", ["history.csv", "metrics.json", "anchors.json", "ranking.json"])
def test_missing_control_artifact_names_the_file(tmp_path, monkeypatch, filename):
    monkeypatch.chdir(tmp_path)
    descriptions, stage_dirs = build_workspace(tmp_path, control=("alpha",))
    missing = stage_dirs["alpha"][CONTROL] / filename
    missing.unlink()
    with pytest.raises(ArtifactMissingError, match=re.escape(str(missing))):
        load_experiment("alpha", descriptions["alpha"], stage_dirs["alpha"])


def test_control_folder_must_agree_with_the_description(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    descriptions, stage_dirs = build_workspace(tmp_path, control=("alpha",))
    without = {s: d for s, d in stage_dirs["alpha"].items() if s != CONTROL}
    with pytest.raises(ArtifactMissingError, match=r"control: true .*'stage2_control'.*results/alpha/stage2_control"):
        load_experiment("alpha", descriptions["alpha"], without)
    # A control folder the config does not ask for is refused rather than silently shown or dropped.
    with pytest.raises(ArtifactError, match=r"'stage2_control' folder .* does not say control: true"):
        load_experiment("alpha", {**descriptions["alpha"], "control": False}, stage_dirs["alpha"])
    with pytest.raises(ArtifactError, match=r"'control' must be true or false, got 'yes'"):
        load_experiment("alpha", {**descriptions["alpha"], "control": "yes"}, stage_dirs["alpha"])


def test_control_figures_add_a_curve_and_bars(control_report, report):
    figs, plain = control_report["figures"], report["figures"]
    # No retrieval grid for the control: the figure set is the same as without it.
    assert set(figs["alpha"]) == set(figs["beta"]) == set(FIGURE_KEYS)
    for path in figs["alpha"].values():
        with Image.open(control_report["root"] / path) as img:
            assert img.format == "PNG"
            img.verify()
    for key in ("learning_curves", "cmc", "anchors"):
        with_control = (control_report["root"] / figs["alpha"][key]).read_bytes()
        assert with_control != (report["root"] / plain["alpha"][key]).read_bytes(), key
        # beta has no control: its figures are exactly those of the report without any control.
        beta, beta_plain = (r["root"] / r["figures"]["beta"][key] for r in (control_report, report))
        assert beta.read_bytes() == beta_plain.read_bytes(), key
    for key in ("cmc", "anchors"):
        # Anti-aliased text has a few pixels of that grey too; the control's curve or bars add hundreds.
        grey, grey_plain = (_grey_pixels(r["root"] / r["figures"]["alpha"][key]) for r in (control_report, report))
        assert grey > grey_plain + 300, key


def test_control_rows_and_deltas_in_markdown(control_report):
    md = control_report["md"].read_text(encoding="utf-8")
    s2, c = FINAL["alpha"]["stage2"], FINAL_CONTROL
    summary = _md_table_after(md, "## Summary")
    assert summary[0][-1] == "\u0394 mAP vs control (pp)" and all(len(row) == 10 for row in summary)
    vs_control = f"{100 * (s2['mAP'] - c['mAP']):+.1f}"
    assert vs_control == "+2.5"
    assert summary[2][-1] == vs_control and summary[2][-2] == "+3.4"
    assert summary[3][0] == "beta" and summary[3][-1] == "\u2014"

    alpha = _section(md, "alpha")
    setup = {row[0]: row[1] for row in _md_table_after(alpha, "### Setup")[2:]}
    assert "CE \u00d71" in setup[CONTROL_ROW] and "anchor loss mse" not in setup[CONTROL_ROW]
    assert "trained 4 epochs" in setup[CONTROL_ROW]

    per_stage = _md_table_after(alpha, "### Stage 1 vs stage 2 vs control")
    labels = [row[0] for row in per_stage[2:]]
    assert labels == ["Stage 1 (baseline)", "Stage 2 (anchor)", CONTROL_ROW, "\u0394 stage 2 \u2212 stage 1 (pp)",
                      "\u0394 stage 2 \u2212 control (anchor loss alone, pp)"]
    cmc2, cmcc = _cmc(s2["R1"]), _cmc(c["R1"])
    values2 = (cmc2[0], cmc2[4], cmc2[9], s2["mAP"], s2["mINP"])
    values_c = (cmcc[0], cmcc[4], cmcc[9], c["mAP"], c["mINP"])
    assert per_stage[4][1:] == [f"{100 * v:.1f}" for v in values_c]
    expected = [f"{100 * (a - b):+.1f}" for a, b in zip(values2, values_c)]
    assert per_stage[6][1:] == [e.lstrip("+-") if float(e) == 0 else e for e in expected]
    assert per_stage[6][4] == vs_control

    anchors = _md_table_after(alpha, "### Anchor diagnostics")
    (own2, other2), (own_c, other_c) = ANCHORS["stage2"], ANCHORS[CONTROL]
    assert anchors[4] == [CONTROL_ROW, f"{own_c:.4g}", f"{other_c:.4g}", f"{own_c / other_c:.3f}", "4"]
    assert anchors[6][:4] == ["\u0394 stage 2 \u2212 control (anchor loss alone)", f"{own2 - own_c:+.4g}",
                              f"{other2 - other_c:+.4g}", f"{own2 / other2 - own_c / other_c:+.3f}"]


def test_experiment_without_control_shows_no_control(control_report, report):
    beta = _section(control_report["md"].read_text(encoding="utf-8"), "beta")
    assert "control" not in beta
    assert [row[0] for row in _md_table_after(beta, "### Stage 1 vs stage 2")[2:]] == [
        "Stage 1 (baseline)", "Stage 2 (anchor)", "\u0394 stage 2 \u2212 stage 1 (pp)"]
    # A report where no experiment has a control says nothing about one: no column, note, row or caption.
    for page in (report["html"].read_text(encoding="ascii"), report["md"].read_text(encoding="utf-8")):
        assert "control" not in page


def test_control_is_explained_and_coloured_in_html(control_report):
    page = control_report["html"].read_text(encoding="ascii")
    notes = re.search(r'<ul class="notes">(.*?)</ul>', page, re.S).group(1)
    assert "without the anchor loss" in notes and "what the anchor loss itself buys" in notes
    s2, c = FINAL["alpha"]["stage2"], FINAL_CONTROL
    assert f'<td class="num pos">{100 * (s2["mAP"] - c["mAP"]):+.1f}</td>' in page
    (own2, other2), (own_c, other_c) = ANCHORS["stage2"], ANCHORS[CONTROL]
    assert f'<td class="num pos">{own2 / other2 - own_c / other_c:+.3f}</td>' in page
    # Retrieval grids stay for stage 1 and stage 2 only.
    assert len(re.findall(r"<img\b", page)) == 2 * len(FIGURE_KEYS)


def test_control_report_is_byte_identical_on_rerun(control_report, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    again = run_report(tmp_path, control=("alpha",))
    assert again["html"].read_bytes() == control_report["html"].read_bytes()
    assert again["md"].read_bytes() == control_report["md"].read_bytes()
    first = control_report["figures"]["alpha"]
    for key, path in again["figures"]["alpha"].items():
        assert (tmp_path / path).read_bytes() == (control_report["root"] / first[key]).read_bytes(), key
