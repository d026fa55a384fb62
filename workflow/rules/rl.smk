# RL fine-tuning of the SFT policy against the reward model: one job per rl.methods x rl.seeds, each
# followed by `consolidate` (the RL adapter, or the last ZeRO checkpoint, merged into the SFT weights).


rule rl:
    input:
        code("src/sumrl/rl"),
        SCALE_CODE,
        SHARED_CODE,
        "data/prepared",
        "models/sft",
        "models/reward",
    output:
        directory("models/rl_run/{method}_s{seed}"),
        "reports/curves/rl_{method}_s{seed}.csv",
    log:
        "logs/rl/{method}_s{seed}.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(12000),
        runtime=480,
        gpu=GPU,
    params:
        rl=config["rl"],
        prompt=config["prompt"],
        compute=config["compute"],
        model_dtype=config["model"]["dtype"],
    shell:
        "sumrl rl --method {wildcards.method} --seed {wildcards.seed} > {log} 2>&1"


rule consolidate_rl:
    input:
        code("src/sumrl/scale/consolidate.py"),
        "src/sumrl/artifacts.py",
        "models/rl_run/{method}_s{seed}",
        "models/sft",
    output:
        directory("models/rl/{method}_s{seed}"),
        "reports/consolidate/{method}_s{seed}.json",
    log:
        "logs/consolidate/{method}_s{seed}.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        compute=config["compute"],
    shell:
        "sumrl consolidate --stage {wildcards.method}_s{wildcards.seed} > {log} 2>&1"
