# Helpers shared by the rules: the typed experiment configs and input functions.
from clusteralign.config import (
    InferenceConfig,
    ReportConfig,
    RunSettings,
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
# What the report reads of every trained stage, and of each of its evaluations.
STAGE_FILES = ("history.csv", "anchors.json")
EVALUATION_FILES = ("metrics.json", "ranking.json", "per_query.csv")


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    dataset="[A-Za-z0-9_-]+",
    replicate="[0-9]+",
    stage="stage1|stage2|stage2_control",
    testset="|".join(config["datasets"]),


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


def replicate_of(wildcards):
    # Replicate r of an experiment trains every stage with seed + r.
    return EXPERIMENTS[wildcards.experiment].replicate(int(wildcards.replicate))


def stage_config(wildcards, stage=None):
    return getattr(replicate_of(wildcards), stage or wildcards.stage)


def manifest_of(wildcards):
    return f"results/datasets/{EXPERIMENTS[wildcards.experiment].dataset}/manifest.csv"


def training_inputs(wildcards):
    # Stage 1 starts from the configured weights (only a named file is an input: "imagenet"
    # is looked up in the torch cache when the job runs); stage 2 and its control from stage 1,
    # and stage 2 from stage 1's anchors too.
    inputs = {"manifest": manifest_of(wildcards)}
    if wildcards.stage == "stage1":
        path = EXPERIMENTS[wildcards.experiment].model.pretrained_file()
        inputs.update({"pretrained": path} if path else {})
        return inputs
    stage1 = f"results/{wildcards.experiment}/rep{wildcards.replicate}/stage1"
    inputs["init_model"] = f"{stage1}/model.pt"
    if wildcards.stage == "stage2":
        inputs["init_anchors"] = f"{stage1}/anchors.pt"
    return inputs


def model_params(wildcards):
    return to_dict(EXPERIMENTS[wildcards.experiment].model)


def stage_params(wildcards):
    # Run-only settings (checkpoint_every, augment_chunk) are left out: see run_only_settings.
    return result_settings(stage_config(wildcards))


def run_only_settings(wildcards):
    # An object of the package's own class: Snakemake hands it to the script but compares only
    # parameters of plain types when it decides a rerun, so changing these reruns nothing.
    return RunSettings.of(stage_config(wildcards))


def section_params(section):
    return lambda wildcards: to_dict(
        getattr(EXPERIMENTS[wildcards.experiment], section)
    )


def anchor_params(wildcards):
    # Both stages' anchor files are computed the way stage 2 consumes them.
    return to_dict(stage_config(wildcards, "stage2").anchors)


def inference_params(stage=None):
    # How test features are extracted: with the settings of `stage`, or of the {stage} wildcard.
    return lambda wildcards: to_dict(InferenceConfig.of(stage_config(wildcards, stage)))


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
        "replicates": exp.replicates,
        "test_datasets": list(exp.test_datasets),
    }


def arms(exp):
    return STAGES + (("stage2_control",) if exp.control else ())


def report_inputs(wildcards):
    files = {}
    for name, exp in EXPERIMENTS.items():
        for r in range(exp.replicates):
            for stage in arms(exp):
                base = f"{name}/rep{r}/{stage}"
                files.update(
                    {f"{base}/{what}": f"results/{base}/{what}" for what in STAGE_FILES}
                )
                for testset in exp.evaluated_on:
                    for what in EVALUATION_FILES:
                        files[f"{base}/eval/{testset}/{what}"] = (
                            f"results/{base}/eval/{testset}/{what}"
                        )
    return files


# A job's threads are a maximum, scaled down to --cores. A job that may use a GPU spends them
# decoding its images, one process per thread (each about 1,000 small JPEGs a second), and
# feeding the device; on a GPU run each such job waits for the one before it, so its decoding
# adds to the whole run's time. A job kept on the CPU computes with its threads, and its digits
# depend on their number: 2, as in the README's figures (a stage's `num_threads` pins it).
GPU_JOB_THREADS = 8
CPU_JOB_THREADS = 2


def job_threads(gpus):
    return lambda wildcards: GPU_JOB_THREADS if gpus(wildcards) else CPU_JOB_THREADS


def training_gpus(wildcards):
    # One GPU per data-parallel process (a training stage's `world_size`); none for a stage
    # whose `device: cpu` keeps it off the GPU, so it never holds one idle.
    cfg = stage_config(wildcards)
    return 0 if cfg.device == "cpu" else cfg.world_size


def eval_gpu(wildcards):
    # The final evaluation holds a GPU only when its `eval: device` may use one.
    return 0 if EXPERIMENTS[wildcards.experiment].eval.device == "cpu" else 1


def inference_gpu(stage=None):
    # Feature extraction runs on the device of the settings it uses: `stage`'s, or those of
    # the {stage} wildcard.
    def count(wildcards):
        cfg = stage_config(wildcards, stage)
        return 0 if cfg.device == "cpu" else 1

    return count
