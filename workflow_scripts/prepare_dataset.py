from pathlib import Path

from clusteralign.pipeline.prepare import prepare_dataset
from clusteralign.pipeline.script import workflow_step

with workflow_step(snakemake):
    prepare_dataset(
        snakemake.wildcards.dataset,
        snakemake.params.dataset,
        Path(snakemake.params.work_dir),
        Path(snakemake.output.manifest),
    )
