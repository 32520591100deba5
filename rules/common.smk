# Helpers shared by the rules: the typed experiment configs and input functions.
from clusteralign.config import (
    ReportConfig,
    build_experiments,
    from_dict,
    result_settings,
    sorted_keys,
    to_dict,
)
from clusteralign.data.dataset_config import DatasetConfig
from clusteralign.pipeline.prepare import check_archive_available

EXPERIMENTS = build_experiments(config)
REPORT = from_dict(ReportConfig, config.get("report"), "report")
STAGES = ("stage1", "stage2")


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    dataset="[A-Za-z0-9_-]+",
    stage="stage1|stage2|stage2_control",


def dataset_of(wildcards):
    name = wildcards.dataset
    return DatasetConfig.from_mapping(name, config["datasets"][name])


def dataset_params(wildcards):
    # Snakemake reruns a job whose parameters differ, and a mapping's key order counts; every
    # default is written out, so stating one explicitly reruns nothing.
    return sorted_keys(dataset_of(wildcards).to_mapping())


def dataset_inputs(wildcards):
    # The folders a dataset is read from: a missing one stops the plan before any job, and a
    # newer one reruns the preparation. A missing archive stops it too, unless extracted already.
    dataset = dataset_of(wildcards)
    check_archive_available(dataset)
    return [str(path) for path in dataset.local_inputs()]


def pretrained_input(wildcards):
    # The ImageNet weights of "imagenet" are looked up in the torch cache (or downloaded) when
    # the job runs; only a named file is an input.
    path = EXPERIMENTS[wildcards.experiment].model.pretrained_file()
    return [path] if path else []


def manifest_of(wildcards):
    return f"results/datasets/{EXPERIMENTS[wildcards.experiment].dataset}/manifest.csv"


def model_params(wildcards):
    return to_dict(EXPERIMENTS[wildcards.experiment].model)


def stage_params(stage):
    # Run-only settings (checkpoint_every, augment_chunk) are left out: changing them reruns
    # nothing; the training script takes them from the config.
    return lambda wildcards: result_settings(
        getattr(EXPERIMENTS[wildcards.experiment], stage)
    )


def section_params(section):
    return lambda wildcards: to_dict(
        getattr(EXPERIMENTS[wildcards.experiment], section)
    )


def _inference_settings(stage):
    # What feature extraction needs of a stage's settings.
    return {
        "augment": to_dict(stage.augment),
        "device": stage.device,
        "amp": stage.amp,
        "channels_last": stage.channels_last,
    }


def anchor_params(wildcards):
    # Both stages' anchor files are computed the way stage 2 consumes them.
    stage2 = EXPERIMENTS[wildcards.experiment].stage2
    return {"anchors": to_dict(stage2.anchors), **_inference_settings(stage2)}


def inference_params(wildcards):
    return _inference_settings(
        getattr(EXPERIMENTS[wildcards.experiment], wildcards.stage)
    )


def experiment_description(name):
    # What the report shows of each experiment: the settings that decide its results.
    exp = EXPERIMENTS[name]
    return {
        "name": name,
        "dataset": exp.dataset,
        "model": to_dict(exp.model),
        "stage1": result_settings(exp.stage1),
        "stage2": result_settings(exp.stage2),
        "eval": to_dict(exp.eval),
        "control": exp.control,
    }


def report_inputs(wildcards):
    files = {}
    for name, exp in EXPERIMENTS.items():
        for stage in STAGES + (("stage2_control",) if exp.control else ()):
            for what in ("history.csv", "anchors.json", "metrics.json", "ranking.json"):
                files[f"{name}/{stage}/{what}"] = f"results/{name}/{stage}/{what}"
    return files


def gpus(stage):
    # One GPU per data-parallel process (a training stage's `world_size`); none for a stage
    # whose `device: cpu` keeps it off the GPU, so it never holds one idle.
    def count(wildcards):
        cfg = getattr(EXPERIMENTS[wildcards.experiment], stage)
        return 0 if cfg.device == "cpu" else cfg.world_size

    return count


def eval_gpu(wildcards):
    # The final evaluation holds a GPU only when its `eval: device` may use one.
    return 0 if EXPERIMENTS[wildcards.experiment].eval.device == "cpu" else 1


def inference_gpu(stage=None):
    # Feature extraction runs on the device of the settings it uses: `stage`'s, or those of
    # the {stage} wildcard.
    def count(wildcards):
        cfg = getattr(EXPERIMENTS[wildcards.experiment], stage or wildcards.stage)
        return 0 if cfg.device == "cpu" else 1

    return count
