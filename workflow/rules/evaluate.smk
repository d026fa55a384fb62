# Generation on the test split and evaluation (ROUGE, reward, KL to SFT, length, EOS rate) for every
# policy: base and sft (wildcard `policy`), and each RL run (wildcards `method`, `seed`); then the
# LLM judge over all of them (a no-op unless judge.enabled).


rule generate:
    input:
        code("src/sumrl/evaluate/generate.py"),
        SHARED_CODE,
        "data/prepared",
        policy_model,
    output:
        "reports/generations/{policy}.jsonl",
    log:
        "logs/generate/{policy}.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        seed=config["seed"],
        generate=config["generate"],
        prompt=config["prompt"],
        data_max_document_tokens=config["data"]["max_document_tokens"],
        model_dtype=config["model"]["dtype"],
        compute=config["compute"],
    shell:
        "sumrl generate --policy {wildcards.policy} > {log} 2>&1"


rule generate_rl:
    input:
        code("src/sumrl/evaluate/generate.py"),
        SHARED_CODE,
        "data/prepared",
        "models/rl/{method}_s{seed}",
    output:
        "reports/generations/{method}_s{seed}.jsonl",
    log:
        "logs/generate/{method}_s{seed}.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        seed=config["seed"],
        generate=config["generate"],
        prompt=config["prompt"],
        data_max_document_tokens=config["data"]["max_document_tokens"],
        model_dtype=config["model"]["dtype"],
        compute=config["compute"],
    shell:
        "sumrl generate --policy {wildcards.method}_s{wildcards.seed} > {log} 2>&1"


rule evaluate:
    input:
        code("src/sumrl/evaluate/metrics.py"),
        "src/sumrl/rl/advantages.py",
        SHARED_CODE,
        "reports/generations/{policy}.jsonl",
        "models/reward",
        "models/sft",
        policy_model,
    output:
        "reports/eval/{policy}.json",
    log:
        "logs/evaluate/{policy}.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        evaluate=config["evaluate"],
        prompt=config["prompt"],
        data_max_document_tokens=config["data"]["max_document_tokens"],
        model_dtype=config["model"]["dtype"],
        compute=config["compute"],
    shell:
        "sumrl evaluate --policy {wildcards.policy} > {log} 2>&1"


rule evaluate_rl:
    input:
        code("src/sumrl/evaluate/metrics.py"),
        "src/sumrl/rl/advantages.py",
        SHARED_CODE,
        "reports/generations/{method}_s{seed}.jsonl",
        "models/reward",
        "models/sft",
        "models/rl/{method}_s{seed}",
    output:
        "reports/eval/{method}_s{seed}.json",
    log:
        "logs/evaluate/{method}_s{seed}.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
        gpu=GPU,
    params:
        evaluate=config["evaluate"],
        prompt=config["prompt"],
        data_max_document_tokens=config["data"]["max_document_tokens"],
        model_dtype=config["model"]["dtype"],
        compute=config["compute"],
    shell:
        "sumrl evaluate --policy {wildcards.method}_s{wildcards.seed} > {log} 2>&1"


rule reward_eval:
    input:
        code("src/sumrl/evaluate/reward_eval.py"),
        "src/sumrl/data/sources.py",
        SHARED_CODE,
        "data/pairs",
        "models/reward",
    output:
        "reports/reward_eval.json",
    log:
        "logs/reward_eval.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        reward_eval_pairs=config["reward"]["eval_pairs"],
        prompt=config["prompt"],
        evaluate_batch_size=config["evaluate"]["batch_size"],
        model_dtype=config["model"]["dtype"],
        compute=config["compute"],
    shell:
        "sumrl reward-eval > {log} 2>&1"


rule judge:
    input:
        code("src/sumrl/evaluate/judge.py"),
        "src/sumrl/evaluate/metrics.py",
        SHARED_CODE,
        expand("reports/generations/{policy}.jsonl", policy=POLICIES),
        "models/base",
    output:
        "reports/judge.json",
    log:
        "logs/judge.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=120,
        gpu=JUDGE_GPU,
    params:
        seed=config["seed"],
        judge=config["judge"],
        compute=config["compute"],
        model_dtype=config["model"]["dtype"],
    shell:
        "sumrl judge > {log} 2>&1"
