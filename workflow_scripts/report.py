from pathlib import Path

from clusteralign.pipeline.script import workflow_step
from clusteralign.report import CONTROL, load_experiment, make_figures, write_report

# Guarded: worker processes (spawned) import this file again and must not rerun the step.
if __name__ == "__main__":
    with workflow_step(snakemake):
        experiments, figures = [], {}
        for description in snakemake.params.experiments:
            name = description["name"]
            # The control run (stage 2 without anchor loss) exists only where the experiment asks for it.
            stages = ("stage1", "stage2") + ((CONTROL,) if description.get("control") else ())
            exp = load_experiment(name, description, {s: Path("results") / name / s for s in stages})
            experiments.append(exp)
            figures[name] = make_figures(exp, Path(snakemake.output.html).parent / "report" / name,
                                         max_examples=snakemake.params.examples)
        write_report(experiments, figures, snakemake.output.html, snakemake.output.md, title=snakemake.params.title)
