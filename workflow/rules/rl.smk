# RL fine-tuning of the SFT policy against the reward model: one job per rl.methods x rl.seeds.


rule rl:
    input:
        code("src/sumrl/rl"),
        SHARED_CODE,
        "data/prepared",
        "models/sft",
        "models/reward",
    output:
        directory("models/rl/{method}_s{seed}"),
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
