# Base model and data: base_model, prepare_data, pairs (stages of the same names in src/sumrl/stages.py).


rule base_model:
    input:
        table_inputs("base_model"),
    output:
        directory("models/base"),
    log:
        "logs/base_model.log",
    benchmark:
        "logs/benchmarks/base_model.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        **table_params("base_model"),
    shell:
        "sumrl base-model > {log} 2>&1"


rule prepare_data:
    input:
        table_inputs("prepare_data"),
    output:
        directory("data/prepared"),
    log:
        "logs/prepare_data.log",
    benchmark:
        "logs/benchmarks/prepare_data.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(4000),
        runtime=30,
    params:
        **table_params("prepare_data"),
    shell:
        "sumrl prepare-data > {log} 2>&1"


rule pairs:
    input:
        table_inputs("pairs"),
    output:
        directory("data/pairs"),
    log:
        "logs/pairs.log",
    benchmark:
        "logs/benchmarks/pairs.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(8000),
        runtime=120,
        gpu=GPU,
    params:
        **table_params("pairs"),
    shell:
        "sumrl pairs > {log} 2>&1"
