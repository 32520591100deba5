"""torch.compile's on-disk cache: where the workflow keeps it, and that a compiled stage reuses it."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from clusteralign.config import ConfigError
from clusteralign.pipeline.script import workflow_step
from clusteralign.train.compile_cache import DEFAULT_COMPILE_CACHE, ENV, compile_cache_dir, use_compile_cache
from clusteralign.train.trainer import train_stage

from test_trainer import experiment, spec


@pytest.fixture
def no_cache_env():
    """No TORCHINDUCTOR_CACHE_DIR during the test, and none left behind by it."""
    saved = os.environ.pop(ENV, None)
    yield
    os.environ.pop(ENV, None)
    if saved is not None:
        os.environ[ENV] = saved


def test_the_setting_defaults_to_a_directory_of_the_workflow():
    assert compile_cache_dir({}) == DEFAULT_COMPILE_CACHE
    assert compile_cache_dir({"compile_cache": "/shared/cache"}) == "/shared/cache"
    assert compile_cache_dir({"compile_cache": None}) is None


@pytest.mark.parametrize("value", [3, "", "  ", ["a"], True])
def test_a_bad_setting_names_the_key(value):
    with pytest.raises(ConfigError, match=r"^compile_cache: expected a directory path or null"):
        compile_cache_dir({"compile_cache": value})


def test_the_directory_is_named_absolutely(no_cache_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Absolute in the variable: torch resolves it later, perhaps from another working directory.
    assert use_compile_cache("cache/torch") == tmp_path / "cache/torch"
    assert os.environ[ENV] == str(tmp_path / "cache/torch")


def test_the_setting_replaces_the_environment_and_null_keeps_it(no_cache_env, tmp_path):
    # Importing torch._dynamo alone writes torch's default into the variable.
    os.environ[ENV] = str(tmp_path / "default")
    assert use_compile_cache(None) is None and os.environ[ENV] == str(tmp_path / "default")
    assert use_compile_cache(tmp_path / "mine") == tmp_path / "mine"
    assert os.environ[ENV] == str(tmp_path / "mine")


def test_every_workflow_job_uses_the_configured_cache(no_cache_env, tmp_path):
    smk = SimpleNamespace(rule="r", log=[], output=[], threads=1, config={"compile_cache": str(tmp_path / "c")})
    with workflow_step(smk):
        assert os.environ[ENV] == str(tmp_path / "c")


@pytest.mark.slow
def test_a_compiled_stage_trains_like_the_eager_one_and_reuses_the_cache(tiny_dataset, tmp_path, no_cache_env):
    """On the CPU too: inductor compiles C++ kernels, and a second run reads them from the cache."""
    from torch._dynamo.utils import counters  # (sets the variable to torch's default)

    _, manifest = tiny_dataset
    cache = use_compile_cache(tmp_path / "cache")
    eager = train_stage(spec("stage1", manifest, tmp_path / "eager", experiment(epochs=2)))
    runs = []
    for attempt in ("cold", "warm"):
        torch._dynamo.reset()  # forget the compiled code held in memory: only the disk cache remains
        counters.clear()
        history = train_stage(spec("stage1", manifest, tmp_path / attempt, experiment(epochs=2, compile=True)))
        runs.append((history, dict(counters["inductor"])))
    (cold, cold_counts), (warm, warm_counts) = runs
    assert cold_counts.get("fxgraph_cache_miss", 0) > 0 and not cold_counts.get("fxgraph_cache_hit")
    assert warm_counts.get("fxgraph_cache_hit", 0) > 0 and not warm_counts.get("fxgraph_cache_miss")
    assert any((cache / "fxgraph").iterdir())
    # Fused kernels round differently from eager ones (on 17 queries one swapped rank moves the
    # metrics by a few points); the cached kernels are the very same ones.
    pd.testing.assert_series_equal(cold["loss_total"], eager["loss_total"], rtol=1e-4)
    pd.testing.assert_frame_equal(cold[["R1", "mAP"]], eager[["R1", "mAP"]], rtol=0, atol=0.03)
    columns = ["loss_total", "R1", "mAP"]
    pd.testing.assert_frame_equal(warm[columns], cold[columns], check_exact=True)
