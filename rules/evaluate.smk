# Every trained stage is evaluated on the test split of its experiment's dataset and of each
# of its `test_datasets` ({testset}): the files of one evaluation are in R/{stage}/eval/{testset}/.
rule extract_features:
    input:
        model="results/{experiment}/rep{replicate}/{stage}/model.pt",
        manifest="results/datasets/{testset}/manifest.csv",
    output:
        features="results/{experiment}/rep{replicate}/{stage}/eval/{testset}/features.pt",
    log:
        "logs/extract_features/{experiment}_rep{replicate}_{stage}_{testset}.log",
    benchmark:
        "results/benchmarks/extract_features/{experiment}_rep{replicate}_{stage}_{testset}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: job_threads(inference_gpu())
    resources:
        gpu=inference_gpu(),
        mem_mb=8000,
        runtime=60,
    params:
        inference=inference_params(),
        features=section_params("features"),
    script:
        "../workflow_scripts/extract_features.py"


rule evaluate:
    input:
        features="results/{experiment}/rep{replicate}/{stage}/eval/{testset}/features.pt",
    output:
        metrics=report(
            "results/{experiment}/rep{replicate}/{stage}/eval/{testset}/metrics.json",
            caption="../report/metrics.rst",
            category="Metrics",
            subcategory="{experiment}",
            labels={
                "experiment": "{experiment}",
                "replicate": "{replicate}",
                "stage": "{stage}",
                "test set": "{testset}",
            },
        ),
        ranking="results/{experiment}/rep{replicate}/{stage}/eval/{testset}/ranking.json",
        per_query="results/{experiment}/rep{replicate}/{stage}/eval/{testset}/per_query.csv",
    log:
        "logs/evaluate/{experiment}_rep{replicate}_{stage}_{testset}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}_rep{replicate}_{stage}_{testset}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        gpu=eval_gpu,
        mem_mb=8000,
        runtime=60,
    params:
        eval=section_params("eval"),
    script:
        "../workflow_scripts/evaluate.py"
