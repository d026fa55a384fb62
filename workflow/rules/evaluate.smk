# Generation on the test split and evaluation (ROUGE, reward, KL to SFT, length, EOS rate) for every
# policy: base and sft (wildcard `policy`), and each RL run (wildcards `method`, `seed`); then the
# LLM judge over all of them (a no-op unless judge.enabled).


rule generate:
    input:
        table_inputs("generate"),
    output:
        "reports/generations/{policy}.jsonl",
    log:
        "logs/generate/{policy}.log",
    benchmark:
        "logs/benchmarks/generate/{policy}.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        **table_params("generate"),
    shell:
        "sumrl generate --policy {wildcards.policy} > {log} 2>&1"


rule generate_rl:
    input:
        table_inputs("generate_rl"),
    output:
        "reports/generations/{method}_s{seed}.jsonl",
    log:
        "logs/generate/{method}_s{seed}.log",
    benchmark:
        "logs/benchmarks/generate/{method}_s{seed}.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        **table_params("generate_rl"),
    shell:
        "sumrl generate --policy {wildcards.method}_s{wildcards.seed} > {log} 2>&1"


rule evaluate:
    input:
        table_inputs("evaluate"),
    output:
        "reports/eval/{policy}.json",
    log:
        "logs/evaluate/{policy}.log",
    benchmark:
        "logs/benchmarks/evaluate/{policy}.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        **table_params("evaluate"),
    shell:
        "sumrl evaluate --policy {wildcards.policy} > {log} 2>&1"


rule evaluate_rl:
    input:
        table_inputs("evaluate_rl"),
    output:
        "reports/eval/{method}_s{seed}.json",
    log:
        "logs/evaluate/{method}_s{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate/{method}_s{seed}.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        **table_params("evaluate_rl"),
    shell:
        "sumrl evaluate --policy {wildcards.method}_s{wildcards.seed} > {log} 2>&1"


rule reward_eval:
    input:
        table_inputs("reward_eval"),
    output:
        "reports/reward_eval.json",
    log:
        "logs/reward_eval.log",
    benchmark:
        "logs/benchmarks/reward_eval.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        **table_params("reward_eval"),
    shell:
        "sumrl reward-eval > {log} 2>&1"


rule judge:
    input:
        table_inputs("judge"),
    output:
        "reports/judge.json",
    log:
        "logs/judge.log",
    benchmark:
        "logs/benchmarks/judge.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=120,
        gpu=JUDGE_GPU,
    params:
        **table_params("judge"),
    shell:
        "sumrl judge > {log} 2>&1"
