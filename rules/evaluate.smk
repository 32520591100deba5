rule extract_features:
    input:
        model="results/{experiment}/rep{replicate}/{stage}/model.pt",
        manifest=manifest_of,
    output:
        features="results/{experiment}/rep{replicate}/{stage}/features.pt",
    log:
        "logs/extract_features/{experiment}_rep{replicate}_{stage}.log",
    benchmark:
        "results/benchmarks/extract_features/{experiment}_rep{replicate}_{stage}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        gpu=inference_gpu(),
        mem_mb=8000,
        runtime=60,
    params:
        inference=inference_params,
        features=section_params("features"),
    script:
        "../workflow_scripts/extract_features.py"


rule evaluate:
    input:
        features="results/{experiment}/rep{replicate}/{stage}/features.pt",
    output:
        metrics=report(
            "results/{experiment}/rep{replicate}/{stage}/metrics.json",
            caption="../report/metrics.rst",
            category="Metrics",
            subcategory="{experiment}",
            labels={
                "experiment": "{experiment}",
                "replicate": "{replicate}",
                "stage": "{stage}",
            },
        ),
        ranking="results/{experiment}/rep{replicate}/{stage}/ranking.json",
        per_query="results/{experiment}/rep{replicate}/{stage}/per_query.csv",
    log:
        "logs/evaluate/{experiment}_rep{replicate}_{stage}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}_rep{replicate}_{stage}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        eval=section_params("eval"),
    script:
        "../workflow_scripts/evaluate.py"
