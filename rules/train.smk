rule train_stage1:
    input:
        manifest=manifest_of,
        pretrained=pretrained_input,
    output:
        model="results/{experiment}/stage1/model.pt",
        history="results/{experiment}/stage1/history.csv",
    log:
        "logs/train_stage1/{experiment}.log",
    benchmark:
        "results/benchmarks/train_stage1/{experiment}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        gpu=gpus("stage1"),
        mem_mb=16000,
        runtime=720,
    params:
        stage_name="stage1",
        model=model_params,
        stage=stage_params("stage1"),
        features=section_params("features"),
        validation=section_params("validation"),
    script:
        "../workflow_scripts/train.py"


rule anchors:
    input:
        model="results/{experiment}/{stage}/model.pt",
        manifest=manifest_of,
    output:
        anchors="results/{experiment}/{stage}/anchors.pt",
        stats="results/{experiment}/{stage}/anchors.json",
    log:
        "logs/anchors/{experiment}_{stage}.log",
    benchmark:
        "results/benchmarks/anchors/{experiment}_{stage}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        gpu=inference_gpu("stage2"),
        mem_mb=8000,
        runtime=60,
    params:
        inference=anchor_params,
        features=section_params("features"),
    script:
        "../workflow_scripts/anchors.py"


rule train_stage2:
    input:
        manifest=manifest_of,
        init_model="results/{experiment}/stage1/model.pt",
        init_anchors="results/{experiment}/stage1/anchors.pt",
    output:
        model="results/{experiment}/stage2/model.pt",
        history="results/{experiment}/stage2/history.csv",
    log:
        "logs/train_stage2/{experiment}.log",
    benchmark:
        "results/benchmarks/train_stage2/{experiment}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        gpu=gpus("stage2"),
        mem_mb=16000,
        runtime=480,
    params:
        stage_name="stage2",
        model=model_params,
        stage=stage_params("stage2"),
        features=section_params("features"),
        validation=section_params("validation"),
    script:
        "../workflow_scripts/train.py"


rule train_stage2_control:
    input:
        manifest=manifest_of,
        init_model="results/{experiment}/stage1/model.pt",
    output:
        model="results/{experiment}/stage2_control/model.pt",
        history="results/{experiment}/stage2_control/history.csv",
    log:
        "logs/train_stage2_control/{experiment}.log",
    benchmark:
        "results/benchmarks/train_stage2_control/{experiment}.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 2
    resources:
        gpu=gpus("stage2_control"),
        mem_mb=16000,
        runtime=480,
    params:
        stage_name="stage2_control",
        model=model_params,
        stage=stage_params("stage2_control"),
        features=section_params("features"),
        validation=section_params("validation"),
    script:
        "../workflow_scripts/train.py"
