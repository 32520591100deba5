# ClusterAlign ReID: raw dataset -> stage 1 (strong baseline) -> anchors -> stage 2 (anchor
# fine-tuning) -> features -> Cython ranking -> report. Every step is a cached file artifact.
#   snakemake --resources gpu=1 --cores all


from pathlib import Path

from snakemake.utils import min_version

from clusteralign.config import build_experiments
from clusteralign.pipeline.config_files import check_config_files
from clusteralign.pipeline.planning import check_experiment_names, check_planned_files
from clusteralign.pipeline.workflow_config import (
    check_against_schema,
    check_workflow_config,
)

min_version("9.0")


# Every config file is read strictly first (a key given twice, a !!python tag, YTE templating:
# one line naming the file and line). config.yaml is checked before Snakemake reads it; a
# --configfile Snakemake has read already, YTE included (README: a config file is code).
check_config_files(workflow.overwrite_configfiles or ["config.yaml"])


# A --configfile (e.g. configs/market1501.yaml) replaces the default experiments instead of
# adding to them.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The typed checks first: each error is one line naming its key. The schema (one line too)
# fills in no defaults: stage 2's differ from stage 1's, and clusteralign.config holds them all.
# Then the files the configured experiments read: here, not in input functions, so that an
# output left by an earlier run can never hide a missing one.
check_workflow_config(config)
check_against_schema(config, Path(workflow.basedir) / "schemas/config.schema.yaml")
check_planned_files(config, build_experiments(config))


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


# An experiment named like one of the workflow's own outputs (results/report/) would collide.
check_experiment_names(
    EXPERIMENTS, [str(path) for rule in workflow.rules for path in rule.products()]
)


localrules:
    all,


rule all:
    default_target: True
    input:
        "results/report.html",
        "results/report.md",
