from pathlib import Path

from clusteralign.data.dataset_config import DatasetConfig
from clusteralign.pipeline.prepare import prepare_dataset
from clusteralign.pipeline.script import workflow_step

# Guarded: worker processes (spawned) import this file again and must not rerun the step.
if __name__ == "__main__":
    with workflow_step(snakemake):
        prepare_dataset(
            DatasetConfig.from_mapping(snakemake.wildcards.dataset, snakemake.params.dataset),
            Path(snakemake.params.work_dir),
            Path(snakemake.output.manifest),
            workers=snakemake.threads,
        )
