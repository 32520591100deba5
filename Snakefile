# ClusterAlign ReID: raw dataset -> stage 1 (strong baseline) -> anchors -> stage 2 (anchor
# fine-tuning) -> features -> Cython ranking -> report. Every step is a cached file artifact.
#   snakemake --cores all --resources gpu=1


from snakemake.utils import min_version, validate

from clusteralign.pipeline.workflow_config import check_workflow_config

min_version("9.0")


# A --configfile (e.g. configs/market1501.yaml) replaces the default experiments instead of
# adding to them.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The typed checks first: each error is one line naming its key, where the schema's comes
# with the whole schema and config. No schema defaults are filled in: stage 2's defaults
# differ from stage 1's, and the typed config in clusteralign.config holds every default.
check_workflow_config(config)
validate(config, "schemas/config.schema.yaml", set_default=False)


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        "results/report.html",
        "results/report.md",
