# RL fine-tuning of the SFT policy against the reward model: one job per rl.methods x rl.seeds, each
# followed by `consolidate` (the RL adapter, or the last ZeRO checkpoint, merged into the SFT weights).


rule rl:
    input:
        table_inputs("rl"),
    output:
        directory("models/rl_run/{method}_s{seed}"),
        report(
            "reports/curves/rl_{method}_s{seed}.csv",
            caption="../report/curve.rst",
            category="Training curves",
        ),
        "dvclive/rl_{method}_s{seed}/metrics.json",
    log:
        "logs/rl/{method}_s{seed}.log",
    benchmark:
        "logs/benchmarks/rl/{method}_s{seed}.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(12000),
        runtime=480,
        gpu=GPU,
    params:
        **table_params("rl"),
    shell:
        "sumrl rl --method {wildcards.method} --seed {wildcards.seed} > {log} 2>&1"


rule consolidate_rl:
    input:
        table_inputs("consolidate_rl"),
    output:
        directory("models/rl/{method}_s{seed}"),
        "reports/consolidate/{method}_s{seed}.json",
    log:
        "logs/consolidate/{method}_s{seed}.log",
    benchmark:
        "logs/benchmarks/consolidate/{method}_s{seed}.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        **table_params("consolidate_rl"),
    shell:
        "sumrl consolidate --stage {wildcards.method}_s{wildcards.seed} > {log} 2>&1"
