from pathlib import Path

from clusteralign.config import FinalEvalConfig, from_dict
from clusteralign.pipeline.script import workflow_step
from clusteralign.pipeline.steps import evaluate_feature_file

# Guarded: worker processes (spawned) import this file again and must not rerun the step.
if __name__ == "__main__":
    with workflow_step(snakemake):
        evaluate_feature_file(
            Path(snakemake.input.features),
            from_dict(FinalEvalConfig, snakemake.params.eval, "eval"),
            Path(snakemake.output.metrics),
            Path(snakemake.output.ranking),
            Path(snakemake.output.per_query),
            num_threads=snakemake.threads,
        )
