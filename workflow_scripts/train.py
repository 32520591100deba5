from pathlib import Path

from clusteralign.config import EvalConfig, FeatureConfig, ModelConfig, from_dict, with_run_settings
from clusteralign.data.manifest import read_manifest
from clusteralign.pipeline.script import workflow_step
from clusteralign.train.launch import run_stage
from clusteralign.train.trainer import StageSpec

# Guarded: worker processes (spawned) import this file again and must not rerun the step.
if __name__ == "__main__":
    with workflow_step(snakemake):
        inputs, params, stage = snakemake.input, snakemake.params, snakemake.wildcards.stage
        run_stage(
            StageSpec(
                name=stage,
                manifest=read_manifest(inputs.manifest),
                model=from_dict(ModelConfig, params.model, "model"),
                stage=with_run_settings(params.stage, params.run_only, stage),
                features=from_dict(FeatureConfig, params.features, "features"),
                validation=from_dict(EvalConfig, params.validation, "validation"),
                out_dir=Path(snakemake.output.model).parent,
                init_model=Path(inputs.init_model) if "init_model" in inputs.keys() else None,
                init_anchors=Path(inputs.init_anchors) if "init_anchors" in inputs.keys() else None,
            ),
            log_file=Path(snakemake.log[0]),
        )
