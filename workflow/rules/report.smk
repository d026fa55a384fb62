# The report compares every policy. Its table deps are the folders reports/eval, reports/generations,
# reports/curves and reports/consolidate, which DVC tracks as such; table_inputs() gives Snakemake the
# files that the other rules write into them.


rule report:
    input:
        table_inputs("report"),
    output:
        report("reports/report.md", caption="../report/report.rst", category="Report"),
        "reports/index.html",
        "reports/metrics.json",
        report(
            directory("reports/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Figures",
        ),
        directory("reports/cards"),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    conda:
        "../envs/sumrl.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb(2000),
        runtime=15,
    params:
        **table_params("report"),
    shell:
        "sumrl report > {log} 2>&1"
