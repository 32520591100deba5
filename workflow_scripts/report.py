from clusteralign.config import ReportConfig, from_dict
from clusteralign.pipeline.script import workflow_step
from clusteralign.report.build import build_report

# Guarded: worker processes (spawned) import this file again and must not rerun the step.
if __name__ == "__main__":
    with workflow_step(snakemake):
        build_report(
            snakemake.params.experiments,
            dict(snakemake.input.items()),
            snakemake.output.html,
            snakemake.output.md,
            from_dict(ReportConfig, snakemake.params.report, "report"),
            snakemake.output.summary,
        )
