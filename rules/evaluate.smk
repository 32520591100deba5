rule extract_features:
    input:
        model="results/{experiment}/{stage}/model.pt",
        manifest=manifest_of,
    output:
        features="results/{experiment}/{stage}/features.pt",
    log:
        "logs/extract_features/{experiment}_{stage}.log",
    benchmark:
        "results/benchmarks/extract_features/{experiment}_{stage}.tsv"
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
        features="results/{experiment}/{stage}/features.pt",
    output:
        metrics=report(
            "results/{experiment}/{stage}/metrics.json",
            caption="../report/metrics.rst",
            category="Metrics",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "stage": "{stage}"},
        ),
        ranking="results/{experiment}/{stage}/ranking.json",
    log:
        "logs/evaluate/{experiment}_{stage}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}_{stage}.tsv"
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
