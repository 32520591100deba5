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
    # Every other job waits for this one, and its files do not depend on how many processes
    # render or verify the images: as many as there are, up to 16 (scaled down to --cores).
    threads: 16
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        dataset=dataset_params,
        work_dir=subpath(output.manifest, parent=True),
    script:
        "../workflow_scripts/prepare_dataset.py"
