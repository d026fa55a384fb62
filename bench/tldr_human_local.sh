#!/usr/bin/env bash
# presets/tldr-human.yaml run end to end on ../shared/data/tldr_feedback_comparisons_small (the reward model
# trained on 841 human comparisons, validated on 81), in a scratch copy of the repo so that the working tree's
# params.yaml, data and models are left alone. Prints the report's headline and the reward-model table.
#   bash bench/tldr_human_local.sh [SCRATCH_DIR]      (over an hour on a 2-core AVX2 CPU in fp32; README)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(cd "$root/../shared/data" && pwd)
work=${1:-/tmp/sumrl-tldr-human}
rm -rf "$work" && mkdir -p "$work"
git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$work")
ln -s "$root/.venv" "$work/.venv"
sets=()
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  sets+=(--set "${line//\$\{SHARED\}/$shared}")
done < "$root/bench/tldr-human-local.overrides"
cd "$work"
export XDG_CACHE_HOME="$work/.cache" HF_HOME="$work/.cache/huggingface" MPLCONFIGDIR="$work/.cache/mpl" TOKENIZERS_PARALLELISM=false
export PATH="$work/.venv/bin:$PATH"
# The scratch copy's own package, not the working tree's editable install: editing the tree during the run
# must not change (or break) the code the run is using.
export PYTHONPATH="$work/src"
sumrl validate --preset presets/tldr-human.yaml "${sets[@]}" --write params.yaml
start=$(date +%s)
snakemake --cores 2 --profile workflow/profiles/local
echo "DAG wall time: $(( $(date +%s) - start )) s"
sed -n '1,/^### Win rate/p' reports/report.md
sed -n '/^## Reward model/,/^## Preference pairs/p' reports/report.md
