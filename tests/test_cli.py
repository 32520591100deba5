"""`clusteralign demo`: the synthetic set ranked by a training-free colour-histogram baseline."""

from __future__ import annotations

import pytest

from clusteralign.cli import main
from clusteralign.data.manifest import read_manifest


@pytest.mark.slow
def test_demo_writes_the_set_and_prints_the_metrics(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--bins", "4"]) == 0
    # By default beside the workflow's datasets, never in place of its manifest.
    assert not (tmp_path / "results/datasets").exists()
    manifest = read_manifest(tmp_path / "results/demo/manifest.csv")
    queries = (manifest["split"] == "query").sum()
    out = capsys.readouterr().out
    assert f"colour-histogram baseline on the synthetic set ({queries} queries)" in out
    assert "R1 " in out and "mAP " in out


@pytest.mark.parametrize("args, message", [
    (["--bins", "0"], "--bins: must be a positive integer, got 0"),
    (["--seed", "-1"], "--seed: must be 0 or more, got -1"),
])
def test_demo_refuses_bad_arguments_by_name(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_demo_refuses_a_file_as_its_folder(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path / "taken")])
    assert "is a file; expected a folder" in capsys.readouterr().err
