# Supervised fine-tuning and the reward model, then `consolidate` turns each training run (plain or
# DeepSpeed ZeRO checkpoints, LoRA or full) into a verified Hugging Face folder.


rule sft:
    input:
        table_inputs("sft"),
    output:
        directory("models/sft_run"),
        report(
            "reports/curves/sft.csv",
            caption="../report/curve.rst",
            category="Training curves",
        ),
        "dvclive/sft/metrics.json",
    log:
        "logs/sft.log",
    benchmark:
        "logs/benchmarks/sft.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=240,
        gpu=GPU,
    params:
        **table_params("sft"),
    shell:
        "sumrl sft > {log} 2>&1"


rule reward:
    input:
        table_inputs("reward"),
    output:
        directory("models/reward_run"),
        report(
            "reports/curves/reward.csv",
            caption="../report/curve.rst",
            category="Training curves",
        ),
        "dvclive/reward/metrics.json",
    log:
        "logs/reward.log",
    benchmark:
        "logs/benchmarks/reward.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=240,
        gpu=GPU,
    params:
        **table_params("reward"),
    shell:
        "sumrl reward > {log} 2>&1"


rule consolidate:
    input:
        table_inputs("consolidate"),
    output:
        directory("models/{stage}"),
        "reports/consolidate/{stage}.json",
    log:
        "logs/consolidate/{stage}.log",
    benchmark:
        "logs/benchmarks/consolidate/{stage}.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        **table_params("consolidate"),
    shell:
        "sumrl consolidate --stage {wildcards.stage} > {log} 2>&1"
