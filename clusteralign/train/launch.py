"""Multi-process training through torchrun.

`run_stage` trains in this process when one process is asked for; otherwise it writes the
stage's settings next to its outputs and starts
``torchrun --standalone --nproc_per_node=N -m clusteralign.train.launch <spec.json>``,
whose ranks each call `train_stage` (which joins the process group from torchrun's
environment).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ..config import EvalConfig, FeatureConfig, ModelConfig, StageConfig, from_dict, to_dict
from ..data.manifest import read_manifest, write_manifest
from ..io import write_json
from .stage_lock import stage_lock
from .trainer import StageSpec, train_stage

log = logging.getLogger(__name__)


def write_launch_spec(spec: StageSpec, folder: Path, log_file: Path | None = None) -> Path:
    """Save everything the ranks need (the manifest as CSV, the configs as JSON) under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(spec.manifest, folder / "manifest.csv")
    path = folder / "spec.json"
    write_json(path, {
        "name": spec.name,
        "manifest": str(folder / "manifest.csv"),
        "model": to_dict(spec.model),
        "stage": to_dict(spec.stage),
        "features": to_dict(spec.features),
        "validation": to_dict(spec.validation),
        "out_dir": str(spec.out_dir),
        "init_model": None if spec.init_model is None else str(spec.init_model),
        "init_anchors": None if spec.init_anchors is None else str(spec.init_anchors),
        "log_file": None if log_file is None else str(log_file),
    })
    return path


def read_launch_spec(path: Path) -> tuple[StageSpec, Path | None]:
    """The StageSpec (and log file) saved by `write_launch_spec`."""
    raw = json.loads(Path(path).read_text())
    optional = lambda key: None if raw[key] is None else Path(raw[key])  # noqa: E731
    spec = StageSpec(
        name=raw["name"],
        manifest=read_manifest(raw["manifest"]),
        model=from_dict(ModelConfig, raw["model"], "model"),
        stage=from_dict(StageConfig, raw["stage"], raw["name"]),
        features=from_dict(FeatureConfig, raw["features"], "features"),
        validation=from_dict(EvalConfig, raw["validation"], "validation"),
        out_dir=Path(raw["out_dir"]),
        init_model=optional("init_model"),
        init_anchors=optional("init_anchors"),
    )
    return spec, optional("log_file")


def run_stage(spec: StageSpec, log_file: Path | None = None) -> pd.DataFrame | None:
    """Train `spec` in this process, or in `spec.stage.world_size` processes under torchrun.

    Holds the stage folder's training lock meanwhile (`stage_lock`): a second training of the
    same stage waits for this one to end, then refuses. Under an outside torchrun, rank 0 holds it.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return _run_stage(spec, log_file)
    with stage_lock(spec.out_dir):
        return _run_stage(spec, log_file)


def _run_stage(spec: StageSpec, log_file: Path | None) -> pd.DataFrame | None:
    n = spec.stage.world_size
    if n == 1 or "LOCAL_RANK" in os.environ:
        return train_stage(spec)
    path = write_launch_spec(spec, Path(spec.out_dir) / "launch", log_file)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "clusteralign.train.launch", str(path)]
    log.info("%s: starting %d processes: %s", spec.name, n, " ".join(cmd))
    with subprocess.Popen(cmd) as proc:
        try:
            returncode = proc.wait()
        except BaseException:
            # Terminated (SystemExit on SIGTERM) or interrupted: torchrun passes SIGTERM on to
            # its ranks, where SIGKILL would leave them running.
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if returncode != 0:
        raise RuntimeError(f"{spec.name}: torchrun with {n} processes failed (exit {returncode}); "
                           f"see the ranks' messages above and {log_file or 'the log'}")
    history = Path(spec.out_dir) / "history.csv"
    return pd.read_csv(history) if history.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: train the stage described by the JSON file given as argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: torchrun ... -m clusteralign.train.launch SPEC.json", file=sys.stderr)
        return 2
    spec, log_file = read_launch_spec(Path(args[0]))
    rank = int(os.environ.get("RANK", "0"))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None and rank == 0:
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s rank{rank} %(name)s: %(message)s", handlers=handlers,
                        force=True)
    train_stage(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
