# ClusterAlign ReID workflow (its training rules come with the training code).


configfile: "config.yaml"


include: "rules/data.smk"


rule all:
    input:
        expand("results/datasets/{dataset}/manifest.csv", dataset=config["datasets"]),
    default_target: True
