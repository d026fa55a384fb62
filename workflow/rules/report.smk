# The report compares every policy. DVC tracks the folders reports/eval, reports/generations,
# reports/curves and reports/consolidate; Snakemake needs the files that other rules write into them.


rule report:
    input:
        code("src/sumrl/report"),
        "src/sumrl/evaluate/metrics.py",
        expand("reports/eval/{policy}.json", policy=POLICIES),
        expand("reports/generations/{policy}.jsonl", policy=POLICIES),
        "reports/curves/sft.csv",
        "reports/curves/reward.csv",
        expand("reports/curves/rl_{policy}.csv", policy=RL_POLICIES),
        "reports/reward_eval.json",
        expand(
            "reports/consolidate/{stage}.json", stage=["sft", "reward", *RL_POLICIES]
        ),
        "data/pairs",
        "reports/judge.json",
    output:
        "reports/report.md",
        "reports/index.html",
        "reports/metrics.json",
        directory("reports/plots"),
    log:
        "logs/report.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    params:
        report=config["report"],
        rl_methods=METHODS,
        rl_seeds=SEEDS,
    shell:
        "sumrl report > {log} 2>&1"
