"""The workflow's static checks: lint and format, the generated schema, planning without torch, the README's commands."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lint_and_format_are_clean():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", "."], cwd=ROOT,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_a_target_appended_to_the_documented_commands_is_a_target():
    # After --resources gpu=1 or --configfile FILE, Snakemake's parser read a target as one more
    # resource (a 40-line traceback) or config file ("No such file").
    from snakemake.cli import get_argument_parser

    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    command = re.compile(r"(?<![\w/.-])(?:\.venv/bin/)?snakemake( --?[^`#|\n\\]*)")
    commands = [m.group(1).strip() for m in command.finditer(text)]
    assert len(commands) >= 8 and "--resources gpu=1 --cores all" in commands
    target = "results/synthetic_resnet18/stage1/model.pt"
    for command in commands:
        args = get_argument_parser().parse_args([*shlex.split(command), target])
        assert args.targets[-1:] == [target], command


def test_planning_imports_no_torch():
    # The Snakefile's imports run in every Snakemake start, each job's included: torch would
    # add seconds to every one of them.
    code = ("import sys, clusteralign.pipeline.workflow_config, clusteralign.config, clusteralign.data.dataset_config\n"
            "import clusteralign.pipeline.config_files, clusteralign.pipeline.planning\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_committed_schema_is_generated_from_the_dataclasses():
    from clusteralign.schema import render

    assert (ROOT / "schemas/config.schema.yaml").read_text() == render(), (
        "schemas/config.schema.yaml is stale: run `python -m clusteralign.schema > schemas/config.schema.yaml`"
    )
