from pathlib import Path

from clusteralign.config import AnchorConfig, FeatureConfig, InferenceConfig, from_dict
from clusteralign.data.manifest import read_manifest
from clusteralign.pipeline.script import workflow_step
from clusteralign.pipeline.steps import compute_anchor_file

# Guarded: worker processes (spawned) import this file again and must not rerun the step.
if __name__ == "__main__":
    with workflow_step(snakemake):
        compute_anchor_file(
            Path(snakemake.input.model),
            read_manifest(snakemake.input.manifest),
            from_dict(InferenceConfig, snakemake.params.inference, "inference"),
            from_dict(AnchorConfig, snakemake.params.anchors, "anchors"),
            from_dict(FeatureConfig, snakemake.params.features, "features"),
            Path(snakemake.output.anchors),
            Path(snakemake.output.stats),
        )
