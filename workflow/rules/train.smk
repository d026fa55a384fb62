# Supervised fine-tuning and the reward model, then `consolidate` turns each training run (plain or
# DeepSpeed ZeRO checkpoints, LoRA or full) into a verified Hugging Face folder.


rule sft:
    input:
        code("src/sumrl/train/sft.py"),
        TRAIN_CODE,
        SHARED_CODE,
        "data/prepared",
        "models/base",
    output:
        directory("models/sft_run"),
        "reports/curves/sft.csv",
    log:
        "logs/sft.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=240,
        gpu=GPU,
    params:
        seed=config["seed"],
        sft=config["sft"],
        prompt=config["prompt"],
        compute=config["compute"],
        data_max_document_tokens=config["data"]["max_document_tokens"],
        data_max_summary_tokens=config["data"]["max_summary_tokens"],
        model_dtype=config["model"]["dtype"],
    shell:
        "sumrl sft > {log} 2>&1"


rule reward:
    input:
        code("src/sumrl/train/reward.py"),
        TRAIN_CODE,
        SHARED_CODE,
        "data/pairs",
        "models/base",
    output:
        directory("models/reward_run"),
        "reports/curves/reward.csv",
    log:
        "logs/reward.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=240,
        gpu=GPU,
    params:
        seed=config["seed"],
        reward_kind=config["reward"]["kind"],
        reward_num_scores=config["reward"]["num_scores"],
        reward_lora=config["reward"]["lora"],
        reward_learning_rate=config["reward"]["learning_rate"],
        reward_epochs=config["reward"]["epochs"],
        reward_batch_size=config["reward"]["batch_size"],
        reward_checkpoint_every=config["reward"]["checkpoint_every"],
        prompt=config["prompt"],
        compute=config["compute"],
        model_reward_base=config["model"]["reward_base"],
        model_dtype=config["model"]["dtype"],
        data_max_document_tokens=config["data"]["max_document_tokens"],
        data_max_summary_tokens=config["data"]["max_summary_tokens"],
    shell:
        "sumrl reward > {log} 2>&1"


rule consolidate:
    input:
        code("src/sumrl/scale/consolidate.py"),
        "src/sumrl/artifacts.py",
        "models/{stage}_run",
        "models/base",
    output:
        directory("models/{stage}"),
        "reports/consolidate/{stage}.json",
    log:
        "logs/consolidate/{stage}.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=60,
    params:
        compute=config["compute"],
    shell:
        "sumrl consolidate --stage {wildcards.stage} > {log} 2>&1"
