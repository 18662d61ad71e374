"""SynSeg on a SLURM cluster with dask-jobqueue: a worked example (not run by the tests; edit the partition,
account, sizes and paths for your cluster).

    pip install dask-jobqueue==0.9.0            # on the login node, in SynSeg's environment (.venv)
    python docs/slurm_example.py --input /shared/screen --output /shared/screen_masks --jobs 32 --object-csv
    python docs/slurm_example.py --input /shared/mosaic.ome.zarr --output /shared/mosaic_out --jobs 32 \\
        --chunk-size 4096 --object-csv

What it does: starts a Dask scheduler in this process (run it on the login node, or inside a small job of its
own: `sbatch --wrap "python docs/slurm_example.py ..."`), asks SLURM for --jobs worker jobs through
dask-jobqueue's SLURMCluster, and runs SynSeg_Vesicle.py's batch (batch.run, the same code as the command
line) with `--cluster <the scheduler's address>`. Each job runs --workers-per-job Dask worker processes with one
task slot each; each worker segments one file (or one chunk of a big image) at a time with --threads torch
threads, so a job books workers-per-job x threads CPUs. The workers must see the same paths as this process
(inputs, model, output folder): a shared file system, and the same Python environment (`python=`).

Safe to stop: Ctrl-C (or a job killed at its walltime) leaves every finished mask and its table rows; run the
same command again and only what is missing is segmented. A worker that dies (node failure, pre-emption, out
of memory) has its file run again on another worker. Jobs that do not start (a busy queue) only slow the batch:
files wait for workers.

The equivalent without this script: start `dask scheduler --scheduler-file /shared/sched.json` and
`dask worker --scheduler-file /shared/sched.json --nthreads 1` in your own sbatch scripts, then
`python SynSeg_Vesicle.py -i ... -o ... --cluster /shared/sched.json --threads 8`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments: the SLURM request, then what is passed on to SynSeg_Vesicle.py."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="folder of TIFFs, one TIFF, or a zarr / OME-Zarr image")
    p.add_argument("--output", required=True, help="output folder (masks, summary.csv, objects.csv)")
    p.add_argument("--task", choices=["vesicle", "cytoskeleton"], default="vesicle")
    slurm = p.add_argument_group("SLURM request (one job = one node's share)")
    slurm.add_argument("--jobs", type=int, default=32, help="worker jobs (e.g. one per node)")
    slurm.add_argument("--workers-per-job", type=int, default=4, help="Dask worker processes per job")
    slurm.add_argument("--threads", type=int, default=8, help="torch threads per worker")
    slurm.add_argument("--memory", default="64GB", help="memory per job (shared by its workers)")
    slurm.add_argument("--walltime", default="04:00:00")
    slurm.add_argument("--partition", default=None, help="#SBATCH -p")
    slurm.add_argument("--account", default=None, help="#SBATCH -A")
    slurm.add_argument("--gpus-per-job", type=int, default=0,
                       help="GPUs per job; with GPUs use 1 here and --workers-per-job 1 (every worker of a job "
                            "would pick the job's first GPU): one worker per GPU, more jobs for more GPUs")
    slurm.add_argument("--dry-run", action="store_true", help="print the job script SLURM would get and stop")
    return p


def main(args: argparse.Namespace, synseg_args: list[str]) -> int:
    from dask_jobqueue import SLURMCluster

    from synseg.segment import batch

    directives = [f"--gres=gpu:{args.gpus_per_job}"] if args.gpus_per_job else []
    cluster = SLURMCluster(
        queue=args.partition, account=args.account, walltime=args.walltime,
        # cores = task slots: one per worker process, so each worker runs one file at a time
        cores=args.workers_per_job, processes=args.workers_per_job,
        job_cpu=args.workers_per_job * args.threads,  # the CPUs SLURM books for the job
        memory=args.memory, job_extra_directives=directives,
        python=sys.executable,  # the same environment on the nodes
        job_script_prologue=[f"cd {ROOT}", "export OMP_NUM_THREADS=1"],
        local_directory="$TMPDIR", log_directory=str(Path(args.output) / "dask-logs"),
    )
    if args.dry_run:
        print(cluster.job_script())
        cluster.close()
        return 0
    cluster.scale(jobs=args.jobs)
    print(f"scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}; asked SLURM for "
          f"{args.jobs} job(s)", file=sys.stderr)
    try:
        parser = batch.get_args_parser(args.task)
        run_args = parser.parse_args(["-i", args.input, "-o", args.output, "--cluster", cluster.scheduler_address,
                                      "--threads", str(args.threads), *synseg_args])
        return batch.run(run_args, args.task)
    finally:
        cluster.close()


if __name__ == "__main__":
    known, rest = get_args_parser().parse_known_args()  # the rest goes to SynSeg_Vesicle.py (--object-csv, ...)
    sys.exit(main(known, rest))
