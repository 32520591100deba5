# One rule trains every stage: stage1 (the strong baseline), stage2 (anchor fine-tuning from
# stage 1) and stage2_control (the same without the anchor loss, for `control: true`).
rule train:
    input:
        unpack(training_inputs),
    output:
        model="results/{experiment}/rep{replicate}/{stage}/model.pt",
        history="results/{experiment}/rep{replicate}/{stage}/history.csv",
    log:
        "logs/train/{experiment}_rep{replicate}_{stage}.log",
    benchmark:
        "results/benchmarks/train/{experiment}_rep{replicate}_{stage}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: job_threads(training_gpus)
    resources:
        gpu=training_gpus,
        mem_mb=16000,
        runtime=lambda wildcards: 720 if wildcards.stage == "stage1" else 240,
    params:
        model=model_params,
        stage=stage_params,
        features=section_params("features"),
        validation=section_params("validation"),
        # Not a parameter Snakemake compares: changing these reruns nothing.
        run_only=run_only_settings,
    script:
        "../workflow_scripts/train.py"


rule anchors:
    input:
        model="results/{experiment}/rep{replicate}/{stage}/model.pt",
        manifest=manifest_of,
    output:
        anchors="results/{experiment}/rep{replicate}/{stage}/anchors.pt",
        stats="results/{experiment}/rep{replicate}/{stage}/anchors.json",
    log:
        "logs/anchors/{experiment}_rep{replicate}_{stage}.log",
    benchmark:
        "results/benchmarks/anchors/{experiment}_rep{replicate}_{stage}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: job_threads(inference_gpu("stage2"))
    resources:
        gpu=inference_gpu("stage2"),
        mem_mb=8000,
        runtime=60,
    params:
        inference=inference_params("stage2"),
        anchors=anchor_params,
        features=section_params("features"),
    script:
        "../workflow_scripts/anchors.py"
