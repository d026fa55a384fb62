# Base model and data: base_model, prepare_data, pairs (stages of the same names in src/sumrl/stages.py).


rule base_model:
    input:
        code("src/sumrl/models/base.py"),
        "src/sumrl/models/load.py",
        "src/sumrl/artifacts.py",
    output:
        directory("models/base"),
    log:
        "logs/base_model.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        model_base=config["model"]["base"],
        model_dtype=config["model"]["dtype"],
        compute_trust_remote_code=config["compute"]["trust_remote_code"],
    shell:
        "sumrl base-model > {log} 2>&1"


rule prepare_data:
    input:
        code("src/sumrl/data"),
        "src/sumrl/models/load.py",
        "src/sumrl/artifacts.py",
        "models/base",
    output:
        directory("data/prepared"),
    log:
        "logs/prepare_data.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        seed=config["seed"],
        data=config["data"],
    shell:
        "sumrl prepare-data > {log} 2>&1"


rule pairs:
    input:
        code("src/sumrl/data"),
        [f for f in SHARED_CODE if not f.startswith("src/sumrl/data/")],
        "data/prepared",
        "models/base",
    output:
        directory("data/pairs"),
    log:
        "logs/pairs.log",
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=120,
        gpu=GPU,
    params:
        seed=config["seed"],
        pairs=config["pairs"],
        prompt=config["prompt"],
        data_on_bad_rows=config["data"]["on_bad_rows"],
        model_dtype=config["model"]["dtype"],
        compute=config["compute"],
    shell:
        "sumrl pairs > {log} 2>&1"
