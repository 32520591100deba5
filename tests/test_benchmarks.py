"""The benchmark scripts run end to end on small sizes and print every figure they promise.

Timings themselves are never asserted (they depend on the machine); this keeps the scripts the
README's performance figures come from working.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from clusteralign.models import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_train_throughput_prints_a_row_per_family():
    out = run_benchmark("train_throughput.py", "--family", "all", "--base-width", "8", "--height", "64",
                        "--width", "32", "--num-identities", "4", "--num-instances", "2", "--num-images", "64",
                        "--num-classes", "16", "--steps", "1", "--warmup", "0", "--device", "cpu", "--threads", "1")
    table = out[out.index("family "):].splitlines()[1:]
    assert [line.split()[0] for line in table] == list(FAMILIES)
    for line in table:
        gflop, model_ips, full_ips, ratio, tflops = map(float, line.split()[1:])
        assert gflop > 0 and model_ips > 0 and full_ips > 0 and ratio > 0 and tflops > 0
    assert out.count("data-path ratio") == len(FAMILIES)


@pytest.mark.slow
def test_train_throughput_augments_several_batches_per_call_when_asked():
    out = run_benchmark("train_throughput.py", "--base-width", "8", "--height", "64", "--width", "32",
                        "--num-identities", "4", "--num-instances", "2", "--num-images", "64", "--num-classes", "16",
                        "--steps", "5", "--warmup", "1", "--device", "cpu", "--threads", "1", "--augment-chunk", "3")
    assert "augment_chunk 3" in out and "data-path ratio" in out, out


@pytest.mark.slow
def test_checkpoint_speed_prints_both_ways_of_writing(tmp_path):
    out = run_benchmark("checkpoint_speed.py", "--backbone", "resnet18", "--base-width", "8", "--num-classes", "16",
                        "--device", "cpu", "--repeats", "1", "--dir", str(tmp_path))
    assert re.search(r"written in place +[\d.]+ s on the training thread", out), out
    assert re.search(r"background writer +[\d.]+ s on the training thread, [\d.]+ s until on disk", out), out
    assert not any(tmp_path.iterdir())  # the temporary folder is gone


@pytest.mark.slow
def test_eval_speed_compares_the_ranker_with_numpy():
    out = run_benchmark("eval_speed.py", "--num-query", "60", "--num-gallery", "400", "--num-distractors", "40",
                        "--num-ids", "30", "--dim", "32")
    assert re.search(r"speed-up \(c\)/\(b\): [\d.]+x", out), out


@pytest.mark.slow
def test_eval_scale_prints_time_and_peak_memory_of_each_variant():
    out = run_benchmark("eval_scale.py", "--num-query", "40", "--num-gallery", "300", "--num-ids", "25",
                        "--num-cams", "4", "--dim", "16", "--peer-memory-gb", "0.0005")
    rows = {}
    for line in out.splitlines():
        match = re.match(r"(\([abc]\) [^\d]+?)\s+(\d+) x (\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+R1 ([\d.]+)\s+mAP ([\d.]+)",
                         line)
        if match:
            rows.setdefault(match.group(1).strip(), []).append([float(v) for v in match.groups()[1:]])
    assert [r[:2] for r in rows["(a) blockwise, no re-ranking"]] == [[40, 300]], out
    full, *at_peer_size = rows["(b) blockwise, re-ranking"]
    assert full[:2] == [40, 300]
    for n_q, n_g, seconds, peak, start, r1, m_ap in rows["(a) blockwise, no re-ranking"] + [full]:
        assert seconds >= 0 and peak >= start > 0 and 0 < m_ap <= 1
    if importlib.util.find_spec("torchreid") is None:
        assert "(c) torchreid: not installed" in out
    else:
        # sqrt(0.0005 GiB / 26 B) = 143 points, split in the problem's proportions; both give the same ranks
        (peer,), (ours,) = rows["(c) torchreid re_ranking, full"], at_peer_size
        assert peer[:2] == ours[:2] == [17, 126]
        assert peer[5:] == pytest.approx(ours[5:], abs=1e-4)


@pytest.mark.slow
def test_extract_speed_prints_images_per_second():
    out = run_benchmark("extract_speed.py", "--base-width", "8", "--height", "64", "--width", "32",
                        "--num-images", "32", "--batch-size", "16", "--repeats", "1", "--device", "cpu")
    assert re.search(r"extraction +[\d.]+ img/s", out), out


@pytest.mark.slow
def test_stage1_time_runs_the_stage_and_projects_the_configured_epochs(tmp_path):
    # A second config file merges over the first, as the "fast" preset does.
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("experiments: {tiny: {stage1: {num_identities: 3, optimizer: {lr: 0.002}}}}\n")
    out = run_benchmark("stage1_time.py", str(ROOT / "tests/config/tiny.yaml"), str(overlay), "--epochs", "2",
                        "--workers", "1", "--work-dir", str(tmp_path), "--set", "epochs=5",
                        "--set", "augment.height=32", "--set", "augment.width=16")
    assert "batch 3x2, lr 0.002, input 32x16" in out, out
    assert re.search(r"stage 1 +[\d.]+ s for 2 epochs", out), out
    projected = re.search(r"projected +[\d.]+ s for the configured 5 epochs: training ([\d.]+) s", out)
    assert projected, out
    # The first epoch (warm-up, compiling) counts once, the second stands for the other four.
    first, second = pd.read_csv(tmp_path / "tiny/stage1/history.csv")["train_seconds"]
    assert float(projected.group(1)) == pytest.approx(first + 4 * second, abs=0.051)
    assert (tmp_path / "tiny/stage1/model.pt").is_file()


@pytest.mark.slow
def test_decode_speed_prints_a_row_per_worker_count(tmp_path):
    out = run_benchmark("decode_speed.py", "--config", str(ROOT / "tests/config/tiny.yaml"), "--work-dir",
                        str(tmp_path), "--height", "32", "--width", "16", "--workers", "0", "2", "--repeats", "1")
    assert re.search(r"dataset +synthetic: \d+ images decoded at 32x16", out), out
    rows = out[out.index("workers"):].splitlines()[1:]
    assert [int(row.split()[0]) for row in rows] == [0, 2]
    assert all(float(row.split()[2]) > 0 for row in rows)


@pytest.mark.slow
def test_stage1_time_checks_its_overrides_like_the_config():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/stage1_time.py"), str(ROOT / "tests/config/tiny.yaml"),
                           "--set", "num_instances=zero"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "experiments.tiny.stage1.num_instances" in proc.stderr, proc.stderr[-2000:]


def load_script(monkeypatch, name: str):
    """benchmarks/<name>.py as a module (importing its neighbours, such as gpu_data_sheet, as a script does)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def roofline(monkeypatch):
    return load_script(monkeypatch, "step_roofline")


def test_roofline_counts_the_bytes_each_operator_must_move(roofline):
    x = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    w = torch.randn(4, 3, 3, 3, dtype=torch.bfloat16)
    bias = torch.randn(8, dtype=torch.bfloat16)
    with roofline.StepRecorder() as rec:
        y = torch.nn.functional.conv2d(x, w, padding=1)  # reads x and w, writes y
        y.view(2, 4, 64)  # a view: nothing
        torch.relu_(y)  # reads and writes y in place
        y + bias[:1].expand(2, 4, 8, 8)  # an expanded input: its one stored element is read
        torch.zeros_like(y)  # writes only
        y.zero_()  # writes only, in place
    costs = {c.op: c for c in rec.costs}
    size = 2 * 4 * 8 * 8 * 2
    assert list(costs) == ["convolution", "relu_", "add", "zeros_like", "zero_"]
    assert costs["convolution"].bytes == x.numel() * 2 + w.numel() * 2 + size
    assert costs["convolution"].flops == 2 * (2 * 4 * 8 * 8) * (3 * 3 * 3)
    assert costs["relu_"].bytes == 2 * size and costs["relu_"].flops == 0
    assert costs["add"].bytes == size + 2 + size
    assert costs["zeros_like"].bytes == costs["zero_"].bytes == size


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_roofline_records_a_step_of_every_family(roofline, family):
    args = argparse.Namespace(family=family, backbone="resnet18", base_width=8, height=64, width=32,
                              num_identities=2, num_instances=2, num_classes=8, amp="bf16")
    by_category = {roofline.category(c.op) for c in roofline.record_step(args)}
    assert {"convolution", "convolution backward", "batch norm", "optimizer"} <= by_category


@pytest.mark.slow
def test_step_roofline_counts_what_train_throughput_counts():
    shape = ("--backbone", "resnet18", "--base-width", "8", "--height", "64", "--width", "32",
             "--num-identities", "4", "--num-instances", "2", "--num-classes", "16")
    out = run_benchmark("step_roofline.py", *shape, "--peak-tflops", "100", "--bandwidth-tbs", "1")
    measured = run_benchmark("train_throughput.py", *shape, "--steps", "1", "--warmup", "0", "--device", "cpu",
                             "--threads", "1")
    per_image = float(re.search(r"\(([\d.]+) per image\)", out).group(1))
    assert per_image == pytest.approx(float(re.search(r"step ([\d.]+) GFLOP", measured).group(1)), abs=0.006)
    separate, fused = (float(v.replace(",", "")) for v in
                       re.search(r"([\d.,]+) MB as separate kernels, ([\d.,]+) MB", out).groups())
    assert 0 < fused < separate
    groups = out[out.index("operators "):out.index("device ")].splitlines()[1:-1]
    assert {"convolution", "convolution backward", "batch norm", "optimizer"} <= {g[:24].strip() for g in groups}
    assert sum(float(g.split()[-2].replace(",", "")) for g in groups) == pytest.approx(separate, abs=0.1 * len(groups))
    # name, peak, bandwidth, bound (two words), ms per step, img/s, TFLOP/s, % of peak
    rows = [line.rsplit(None, 8) for line in out[out.index("device "):].splitlines()[1:]]
    names = ["H100 PCIe", "H100 NVL", "H100", "H200", "A100", "L40S", "A10", "given"]
    assert [r[0] for r in rows] == [name for name in names for _ in range(2)]
    for kernels, ideal in zip(rows[::2], rows[1::2]):
        assert kernels[3:5] == ["separate", "kernels"] and ideal[3:5] == ["ideal", "fusion"]
        assert 0 < float(ideal[5]) < float(kernels[5])  # ms per step
        assert 0 < float(kernels[-1]) < float(ideal[-1]) <= 100  # % of peak


@pytest.mark.parametrize("script, args, message", [
    ("step_roofline.py", ["--peak-tflops", "100"], "--peak-tflops and --bandwidth-tbs go together"),
    ("step_roofline.py", ["--num-identities", "0"], "--num-identities: must be a positive integer, got 0"),
    ("step_roofline.py", ["--backbone", "resnet5"], "--backbone: invalid choice: 'resnet5'"),
    ("train_throughput.py", ["--backbone", "resnet5"], "--backbone: invalid choice: 'resnet5'"),
    ("train_throughput.py", ["--family", "nosuch"], "unknown --family nosuch"),
    ("train_throughput.py", ["--compile", "--cuda-graph", "--compile-mode", "reduce-overhead"],
     "leave out --cuda-graph"),
    ("train_throughput.py", ["--augment-chunk", "-1"], "--augment-chunk must be 0"),
    ("train_throughput.py", ["--num-instances", "0"], "--num-instances: must be a positive integer, got 0"),
    ("extract_speed.py", ["--family", "mgm"], "--family: invalid choice: 'mgm'"),
    ("extract_speed.py", ["--batch-size", "-1"], "--batch-size: must be a positive integer, got -1"),
    ("checkpoint_speed.py", ["--base-width", "0"], "--base-width: must be a positive integer, got 0"),
    ("eval_speed.py", ["--num-ids", "0"], "--num-ids: must be a positive integer, got 0"),
    ("eval_speed.py", ["--num-distractors", "-1"], "--num-distractors: must be 0 or more, got -1"),
    ("eval_scale.py", ["--num-gallery", "0"], "--num-gallery: must be a positive integer, got 0"),
    ("eval_scale.py", ["--peer-memory-gb", "-1"], "--peer-memory-gb: must be positive, got -1.0"),
    ("eval_scale.py", ["--num-gallery", "10", "--num-distractors", "10"], "--num-distractors (10) must be smaller"),
    ("decode_speed.py", ["--height", "0"], "--height: must be a positive integer, got 0"),
    ("decode_speed.py", ["--config", "absent.yaml"], "--config absent.yaml: no such file"),
    ("peer_speed.py", ["--toolkits", "torchreid,nosuch"], "--toolkits: unknown nosuch"),
    ("peer_speed.py", ["--num-instances", "1"], "--num-instances: the triplet loss needs at least 2"),
    ("peer_speed.py", ["--backbone", "resnet34"], "--backbone: invalid choice: 'resnet34'"),
    ("peer_speed.py", ["--train-ids", "8"], "--train-ids: a batch draws 16 identities (--num-identities), got 8"),
    ("stage1_time.py", ["absent.yaml"], "absent.yaml: no such file"),
    ("stage1_time.py", ["README.md"], "not valid YAML"),
    ("stage1_time.py", ["config.yaml", "--epochs", "0"], "--epochs: must be a positive integer, got 0"),
])
def test_benchmarks_refuse_bad_arguments_by_name(script, args, message, monkeypatch, capsys):
    # In this process (each would spend seconds importing torch): argparse exits with status 2.
    main = load_script(monkeypatch, script.removesuffix(".py")).main
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err, err


@pytest.mark.slow
def test_stage1_time_refuses_a_config_that_is_not_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- datasets\n- models\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/stage1_time.py"), str(tmp_path / "list.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "list.yaml: expected a mapping" in proc.stderr, proc.stderr


def test_benchmarks_read_config_files_as_strictly_as_the_workflow(tmp_path, monkeypatch, capsys):
    # A key given twice would otherwise time one setting while the file says another.
    (tmp_path / "twice.yaml").write_text("experiments:\n  a:\n    stage1: {epochs: 2}\n    stage1: {epochs: 200}\n")
    main = load_script(monkeypatch, "stage1_time").main
    monkeypatch.setattr(sys, "argv", ["stage1_time.py", str(tmp_path / "twice.yaml")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "twice.yaml: experiments.a.stage1 is given twice, on lines 3 and 4" in err, err


def test_data_sheet_prefers_the_more_specific_name(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from gpu_data_sheet import data_sheet

    assert data_sheet("NVIDIA A10") == (125.0, 0.6)
    assert data_sheet("NVIDIA A100-SXM4-80GB") == (312.0, 2.04)
    assert data_sheet("NVIDIA H100 PCIe") == (756.0, 2.0)
    assert data_sheet("NVIDIA H100 NVL") == (835.0, 3.9)
    assert data_sheet("NVIDIA H100 80GB HBM3") == (989.0, 3.35)
    assert data_sheet("NVIDIA GeForce RTX 4090") is None


PEERS = ("torchreid", "fastreid")


def require_peers() -> None:
    """Skip without the peer toolkits (`make peers`); CLUSTERALIGN_REQUIRE_PEERS=1 (make test) fails instead."""
    missing = [name for name in PEERS if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (make peers)"
        if os.environ.get("CLUSTERALIGN_REQUIRE_PEERS") == "1":
            pytest.fail(f"CLUSTERALIGN_REQUIRE_PEERS=1, but {reason}")
        pytest.skip(reason)


@pytest.mark.slow
def test_peer_speed_trains_every_toolkit_on_the_same_images(tmp_path):
    require_peers()
    out = run_benchmark("peer_speed.py", "--device", "cpu", "--backbone", "resnet18", "--height", "32", "--width", "16",
                        "--image-height", "64", "--image-width", "32", "--train-ids", "4", "--test-ids", "2",
                        "--num-identities", "4", "--num-instances", "4", "--steps", "3", "--warmup", "1",
                        "--workers", "1", "--prepare-workers", "1", "--threads", "1", "--work-dir", str(tmp_path))
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    train = manifest[manifest["split"] == "train"]
    rows = {}
    for line in out[out.index("toolkit "):].splitlines()[1:4]:
        name, rest = line[:13].strip(), line[13:].split()
        rows[name] = rest
    assert list(rows) == ["torchreid", "fast-reid", "this project"], out
    speeds = {}
    for name, (version, train_set, steps, ips, wait, setup, *warmup) in rows.items():
        # Each toolkit trained on the manifest's training images and identities, for at least 3 timed steps.
        assert train_set == f"{len(train)}/{train['pid'].nunique()}", (name, out)
        assert int(steps) >= 3 and float(ips) > 0 and float(setup) > 0, (name, out)
        speeds[name] = float(ips)
    assert rows["torchreid"][0] == "0.2.5" and rows["fast-reid"][0] == "1.4.0"
    assert rows["this project"][4] == "-" and all(rows[p][4].endswith("%") for p in ("torchreid", "fast-reid"))
    assert "fp32 (AMP needs CUDA)" in out and "fp32, channels_last True, eager" in out
    for peer in ("torchreid", "fast-reid"):
        ratio = float(re.search(rf"this project / {peer} +([\d.]+)x", out).group(1))
        assert ratio == pytest.approx(speeds["this project"] / speeds[peer], rel=0.02, abs=0.01)
    fastest = max(("torchreid", "fast-reid"), key=speeds.get)
    assert f"the faster peer ({fastest})" in out
    # Each toolkit's own result file, written by its own process.
    for toolkit in ("torchreid", "fastreid", "clusteralign"):
        result = json.loads((tmp_path / f"{toolkit}.json").read_text())
        assert result["images"] >= 3 * 16 and result["seconds"] > 0


def test_peer_speed_names_a_toolkit_that_is_not_installed(monkeypatch, tmp_path, capsys):
    peer_speed = load_script(monkeypatch, "peer_speed")
    monkeypatch.setattr(peer_speed, "find_spec", lambda name: None if name == "fastreid" else object())
    settings = peer_speed.Settings(manifest="m.csv", work_dir=str(tmp_path), device="cpu", height=32, width=16,
                                   num_identities=2, num_instances=2, backbone="resnet18", workers=1, warmup=0,
                                   steps=1)
    outcome = peer_speed.spawn("fastreid", settings, tmp_path)
    assert outcome.result is None and outcome.error == "fastreid is not installed (make peers)"
    peer_speed.print_table([outcome])
    assert "fast-reid" in capsys.readouterr().out


def _summary(path: Path, seed: int, values: dict[str, tuple[float, float, float]]) -> Path:
    rows = [{"experiment": "e", "dataset": "d", "test_dataset": "d", "replicate": 0, "arm": arm, "seed": seed,
             "R1": r1, "R5": 1.0, "R10": 1.0, "mAP": m, "mINP": inp, "num_valid": 10, "num_skipped": 0}
            for arm, (r1, m, inp) in values.items()]
    # A cross-domain row of the same run is not a replicate of the own-dataset result.
    rows.append({**rows[0], "test_dataset": "other", "R1": 0.0})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_merge_replicates_pairs_runs_by_seed_as_the_report_does(tmp_path, monkeypatch, capsys):
    from scipy import stats

    stage1, stage2, control = [0.50, 0.40, 0.56], [0.55, 0.47, 0.60], [0.54, 0.45, 0.61]
    paths = [_summary(tmp_path / f"rep{s}.csv", s, {"stage1": (stage1[s], 0.4, 0.2), "stage2": (stage2[s], 0.5, 0.3),
                                                     "stage2_control": (control[s], 0.45, 0.25)})
             for s in range(3)]
    main = load_script(monkeypatch, "merge_replicates").main
    monkeypatch.setattr(sys, "argv", ["merge_replicates.py", *map(str, paths)])
    main()
    out = capsys.readouterr().out
    d = [b - a for a, b in zip(stage1, stage2)]
    mean, sd = sum(d) / 3, pd.Series(d).std()
    half = stats.t.ppf(0.975, 2) * sd / 3 ** 0.5
    expected = f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"
    assert "e: 3 replicates (seeds 0, 1, 2)" in out, out
    line = next(x for x in out.splitlines() if x.strip().startswith("stage2 - stage1"))
    assert line.split("(pp)")[1].split()[:3] == expected.split(), (line, expected)
    assert f"{100 * sum(stage1) / 3:.1f} ± {100 * pd.Series(stage1).std():.1f}" in out

    monkeypatch.setattr(sys, "argv", ["merge_replicates.py", str(paths[0]), str(paths[0])])
    with pytest.raises(SystemExit, match="seed 0 of e appears in more than one run"):
        main()
    monkeypatch.setattr(sys, "argv", ["merge_replicates.py", str(tmp_path / "absent.csv")])
    with pytest.raises(SystemExit, match="absent.csv: cannot be read"):
        main()


@pytest.mark.slow
def test_gpu_workflow_runs_the_workflow_with_the_control_and_the_seed_asked_for(tmp_path):
    # A dry run in a copy of the checkout: the script's own steps (overlay, command, log, archive),
    # with the Snakemake and ranker this environment has, so nothing is installed or built.
    work = tmp_path / "checkout"
    # Top-level folders the workflow writes, or reads from outside the code (datasets can be gigabytes).
    skipped = {".git", ".venv", ".wheels", "results", "logs", ".cache", ".snakemake", "build", "data", "resources"}
    shutil.copytree(ROOT, work, ignore=lambda folder, names: skipped & set(names) if Path(folder) == ROOT else set())
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_workflow.sh", str(out), "tests/config/tiny.yaml", "3"], cwd=work,
                          env={**os.environ, "PYTHON": sys.executable, "SNAKEMAKE_ARGS": "-n"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (out / "workflow.log").read_text()
    assert "overlay: experiments:   tiny:     control: true     stage1:       seed: 3" in log, log[:500]
    assert re.search(r"^train\s+3$", log, re.M) and "snakemake rc 0, whole run" in log, log[-3000:]
    assert (out / "workflow_results.tar.gz").is_file()
