rule prepare_dataset:
    input:
        dataset_inputs,
    output:
        manifest="results/datasets/{dataset}/manifest.csv",
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        dataset=dataset_params,
        work_dir=subpath(output.manifest, parent=True),
    script:
        "../workflow_scripts/prepare_dataset.py"
