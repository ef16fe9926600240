# The scenarios of tests/integration/snakemake/test_scenarios.py (see its docstring): one
# Snakemake run with --keep-going --retries 1 on the testbed.
import os

SMALL = os.environ["HPC_EXEC_TESTBED_IMAGE_SMALL"]
PYTHON = os.environ["HPC_EXEC_TESTBED_IMAGE_PYTHON"]
MISSING = os.environ["HPC_EXEC_TESTBED_REGISTRY"] + "/testbed/does-not-exist:1"
WAIT = ("touch arrived.{me}; i=0; while [ ! -e arrived.{other} ]; do i=$((i+1)); "
        "if [ $i -gt 120 ]; then echo {other} never came; exit 9; fi; sleep 1; done; ")
OS_ID = "$(sed -n 's/^ID=//p' /etc/os-release)"

rule all:
    input: "good.txt", "noimage.txt", "flaky.txt", "slow.txt", "joined.txt", "ranks.txt"
    localrule: True

rule good:
    output: "good.txt"
    shell: "echo good > {output}"

rule noimage:
    output: "noimage.txt"
    container: f"docker://{MISSING}"
    shell: "echo never > {output}"

rule flaky:
    output: "flaky.txt"
    shell:
        "if [ -e flaky.once ]; then echo ok > {output}; "
        "else touch flaky.once; echo failing on purpose; exit 3; fi"

rule slow:
    output: "slow.txt"
    resources: runtime=1
    retries: 0
    shell: "sleep 600; touch {output}"

rule left:
    output: "left.txt"
    group: "pair"
    container: f"docker://{SMALL}"
    shell: WAIT.format(me="left", other="right") + "echo " + OS_ID + " > {output}"

rule right:
    output: "right.txt"
    group: "pair"
    container: f"docker://{PYTHON}"
    shell: WAIT.format(me="right", other="left") + "echo " + OS_ID + " > {output}"

rule joined:
    input: "left.txt", "right.txt"
    output: "joined.txt"
    group: "pair"
    shell: "cat {input} > {output}"

rule ranks:
    output: "ranks.txt"
    resources: tasks=4
    container: f"docker://{PYTHON}"
    shell:
        'echo "rank $SLURM_PROCID of $SLURM_NTASKS step $SLURM_JOB_ID.$SLURM_STEP_ID '
        'os=' + OS_ID + '" >> {output}'
