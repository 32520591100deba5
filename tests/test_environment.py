"""The conda environment the rules use asks for what the package needs, at the same minimum versions.

No conda here to build it, so this checks the file against pyproject.toml instead: an
environment that drifted from the package's dependencies would fail only on someone's cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names of PyPI distributions that differ.
CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base", "snakemake": "snakemake-minimal"}
SPEC = re.compile(r"^([A-Za-z0-9_.-]+)\s*(.*)$")


def _requirements(specs: list[str]) -> dict[str, str]:
    """name -> version constraint without spaces, e.g. {"numpy": ">=1.24"}."""
    out = {}
    for spec in specs:
        m = SPEC.match(spec)
        assert m, spec
        out[m.group(1).lower()] = m.group(2).replace(" ", "")
    return out


def test_conda_environment_matches_the_package_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "envs/clusteralign.yaml").read_text())
    conda = _requirements([d for d in env["dependencies"] if isinstance(d, str)])
    needed = _requirements(project["project"]["dependencies"])
    for name, bound in needed.items():
        conda_name = CONDA_NAME.get(name, name)
        assert conda_name in conda, f"envs/clusteralign.yaml lacks {conda_name} (pyproject: {name}{bound})"
        assert conda[conda_name] == bound, f"{conda_name}: conda {conda[conda_name]}, pyproject {bound}"
    # The ranker is compiled when the package is installed into the environment.
    build = _requirements(project["build-system"]["requires"])
    assert conda.get("cython") == build["cython"] and "c-compiler" in conda
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-e .."], pip  # the checkout, relative to envs/


def test_every_rule_that_runs_code_uses_the_environment():
    for path in sorted((ROOT / "rules").glob("*.smk")):
        text = path.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, flags=re.M):
            if re.search(r"^\s+(script|shell|run):", body, flags=re.M):
                assert '"../envs/clusteralign.yaml"' in body, f"{path.name}: rule {rule} runs code without conda:"
