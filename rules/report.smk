rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
            labels={"file": "report (HTML)"},
        ),
        md="results/report.md",
        # One row per experiment x replicate x trained stage, every metric: for pandas.
        summary="results/summary.csv",
        # Snakemake's report evaluates labels with the job's wildcards, of which this job has
        # none: each figure's experiment and name come from matching the patterns instead.
        figures=report(
            directory("results/report"),
            patterns=["{experiment}/{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"experiment": "{experiment}", "figure": "{figure}"},
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    conda:
        "../envs/clusteralign.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        report=to_dict(REPORT),
        experiments=[experiment_description(name) for name in EXPERIMENTS],
    script:
        "../workflow_scripts/report.py"
