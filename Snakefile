# sumrl with Snakemake: base model -> data -> SFT and reward model -> RL (rl.methods x rl.seeds)
# -> generation and evaluation of every policy -> reports/report.md.
#
# Every rule runs the `sumrl` command of its stage in src/sumrl/stages.py, the table that dvc.yaml
# is generated from; tests/test_frontends.py fails if the two front ends disagree with it.
#
#   snakemake --profile workflow/profiles/local --cores 2        # what `make run` does
#   snakemake -n --configfile presets/dialogsum.yaml              # plan a preset over params.yaml
#   snakemake --profile workflow/profiles/slurm                   # on a SLURM cluster
from snakemake.utils import min_version

from sumrl.params import read_yaml

min_version("9.0")
# Snakemake's own message for a YAML error names neither file nor line; sumrl's names both.
read_yaml("params.yaml")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


onstart:
    check_files()


rule all:
    default_target: True
    input:
        "reports/report.md",
        "reports/metrics.json",
