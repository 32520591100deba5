"""Torch files and temporaries: reproducible bytes, errors naming the file, nothing left half written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from clusteralign.io import (
    UnreadableFileError,
    remove_stale_temporaries,
    torch_load,
    torch_load_mapping,
    torch_save,
)
from clusteralign.models.file import ModelFile
from clusteralign.pipeline.steps import evaluate_feature_file
from clusteralign.train.anchors import AnchorSet


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.pt"
    torch_save({"w": torch.arange(1000.0), "meta": {"epoch": 3}}, path)
    return path


def test_a_good_file_reads_back(good):
    assert torch.equal(torch_load(good)["w"], torch.arange(1000.0))
    assert torch_load_mapping(good, ("w",), "a test file")["meta"] == {"epoch": 3}


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "words"])
def test_a_damaged_file_is_named(good, damage):
    data = good.read_bytes()
    # "words": torch's safe unpickler stops at its first byte, which is no pickled object either.
    good.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"epoch: 3\n",
                      "words": b"not a model"}[damage])
    with pytest.raises(UnreadableFileError, match=r"good\.pt: not a readable torch file, perhaps truncated"):
        torch_load(good)


def test_a_pickled_model_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)  # what many ReID repositories publish
    with pytest.raises(UnreadableFileError, match=r"whole_model\.pth: holds pickled Python objects.*state_dict\(\)"):
        torch_load(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.pt does not exist"):
        torch_load(tmp_path / "absent.pt")


def test_files_of_the_wrong_kind_say_what_they_hold(tmp_path, good):
    tensor = tmp_path / "tensor.pt"
    torch_save(torch.ones(3), tensor)
    with pytest.raises(UnreadableFileError, match=r"tensor\.pt: not a clusteralign model file .*found a Tensor"):
        ModelFile.load(tensor)
    with pytest.raises(UnreadableFileError, match=r"good\.pt: not an anchor file \(expected keys anchors, pids, stats; "
                                                  r"found keys w, meta\)"):
        AnchorSet.load(good)
    with pytest.raises(UnreadableFileError, match=r"good\.pt: not a feature file"):
        evaluate_feature_file(good, None, tmp_path / "m.json", tmp_path / "r.json")
    assert not (tmp_path / "m.json").exists()


def test_a_written_file_leaves_no_temporary_behind(tmp_path):
    torch_save({"a": torch.zeros(2)}, tmp_path / "out" / "x.pt")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.pt"]


def test_the_same_object_gives_the_same_bytes_wherever_it_is_written(tmp_path):
    # Stage 2 fingerprints stage 1's model file: a rewrite of the same weights must match it.
    state = {"w": torch.arange(10.0), "pids": [3, 1]}
    torch_save(state, tmp_path / "a.pt")
    torch_save(state, tmp_path / "other" / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "other" / "b.pt").read_bytes()


def test_stale_temporaries_of_one_file_are_removed(tmp_path):
    for name in (".last.pt.abc123.tmp", ".last.pt.x.tmp", ".other.pt.abc123.tmp", "last.pt", ".last.pt.keep"):
        (tmp_path / name).write_text("")
    removed = remove_stale_temporaries(tmp_path / "last.pt")
    assert sorted(p.name for p in removed) == [".last.pt.abc123.tmp", ".last.pt.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.keep", ".other.pt.abc123.tmp", "last.pt"]
    assert remove_stale_temporaries(tmp_path / "absent" / "x.pt") == []


def test_a_terminated_workflow_step_leaves_no_temporary(tmp_path):
    # What SLURM's time limit does to a job: SIGTERM while a file is being written.
    (tmp_path / ".out.pt.old.tmp").write_text("left by a killed attempt")
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from types import SimpleNamespace
        from clusteralign.io import atomic_path
        from clusteralign.pipeline.script import workflow_step

        out = Path({str(tmp_path / "out.pt")!r})
        smk = SimpleNamespace(log=[], rule="demo", threads=1, output=[str(out)], config={{}})
        with workflow_step(smk):
            assert not (out.parent / ".out.pt.old.tmp").exists()
            with atomic_path(out) as tmp:
                tmp.write_text("half")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + 15, proc.stderr[-2000:]
    assert "rule demo stopped (exit status 143)" in proc.stderr  # the log says why it ended
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_input_an_earlier_job_wrote_says_how_to_make_it_again(tmp_path):
    # Snakemake sees a truncated model.pt as up to date: rerun as before, the job fails again.
    model = tmp_path / "results/exp/stage1/model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"PK\x03\x04 cut short")
    script = textwrap.dedent(f"""
        import os
        from types import SimpleNamespace
        from clusteralign.models.file import ModelFile
        from clusteralign.pipeline.script import workflow_step

        os.chdir({str(tmp_path)!r})
        smk = SimpleNamespace(log=["log.txt"], rule="anchors", threads=1, output=["results/exp/stage1/anchors.pt"],
                              input=["results/exp/stage1/model.pt", "results/datasets/d/manifest.csv"], config={{}})
        with workflow_step(smk):
            ModelFile.load(smk.input[0])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("clusteralign.io.UnreadableFileError: results/exp/stage1/model.pt: not a readable torch "
                           "file, perhaps truncated")
    assert last.endswith("An earlier job of the workflow wrote it, so running the workflow as before fails again: "
                         "add `--forcerun results/exp/stage1/model.pt` at the end of the command to make it afresh")
    assert "--forcerun results/exp/stage1/model.pt" in (tmp_path / "log.txt").read_text()


def test_an_unreadable_file_the_user_gave_gets_no_rerun_hint(tmp_path):
    from clusteralign.pipeline.script import with_rerun_hint

    err = UnreadableFileError("weights/r50.pth: not a readable torch file", "weights/r50.pth")
    assert with_rerun_hint(err, ["weights/r50.pth", "results/datasets/d/manifest.csv"]) is None
    assert with_rerun_hint(UnreadableFileError("x: no path"), ["results/x"]) is None
    hinted = with_rerun_hint(UnreadableFileError("./results/a/model.pt: bad", "./results/a/model.pt"),
                             ["results/a/model.pt"])
    assert hinted is not None and "`--forcerun results/a/model.pt`" in str(hinted)
    assert hinted.path == Path("results/a/model.pt")


def test_forked_workers_keep_sigterms_default(tmp_path):
    # A pool stops its workers with SIGTERM while it holds their queue's lock; a worker that
    # unwound instead of dying could wait for that lock forever (a hang seen in a workflow run).
    # A handler that only re-raised the default in the child left a window: Python runs its
    # handlers between bytecodes, so a SIGTERM arriving just before the blocking call was lost.
    # The kernel must see the default from the child's first instruction of its own.
    script = textwrap.dedent("""
        import multiprocessing, os, signal, sys, time
        from clusteralign.pipeline.script import exit_on_sigterm

        def report():
            status = open("/proc/self/status").read() if os.path.exists("/proc/self/status") else ""
            caught = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines()
                      if line.startswith(("SigCgt", "SigBlk"))}
            kernel = [bool(caught[k] >> (signal.SIGTERM - 1) & 1) for k in ("SigCgt", "SigBlk")] if caught else []
            print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, *kernel, flush=True)
            time.sleep(60)

        exit_on_sigterm()
        exit_on_sigterm()  # a second call registers no second set of fork hooks
        child = multiprocessing.get_context("fork").Process(target=report)
        child.start()
        time.sleep(1.0)
        child.terminate()
        child.join(30)
        print(child.exitcode)
        os.kill(os.getpid(), signal.SIGTERM)  # the process that installed it exits by SystemExit
        time.sleep(30)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    out = proc.stdout.split()
    # In the child: the default, neither caught nor blocked (on Linux, read from the kernel).
    assert out[0] == "True" and set(out[1:-1]) <= {"False"}, (proc.stdout, proc.stderr[-2000:])
    assert out[-1] == "-15" and proc.returncode == 143, (proc.stdout, proc.stderr[-2000:])
