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
        figures=report(
            expand(
                "results/report/{experiment}/{figure}.png",
                experiment=EXPERIMENTS,
                figure=FIGURES,
            ),
            caption="../report/figures.rst",
            category="Figures",
            labels=figure_labels,
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
