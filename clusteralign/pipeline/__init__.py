"""One module per workflow step; the scripts in workflow_scripts/ only unpack Snakemake's arguments."""
