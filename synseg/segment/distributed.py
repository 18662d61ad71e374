"""Batches on a Dask cluster: every input file one task, the model loaded once per worker.

    python SynSeg_Vesicle.py -i screen/ -o masks/ --object-csv --cluster local:4
    python SynSeg_Vesicle.py -i screen/ -o masks/ --cluster tcp://head-node:8786

batch.run keeps everything but the work on each file: the plan, the checks of inputs, outputs and earlier
tables, and the tables. Each file it would segment goes to the cluster as one task (Client.submit); the worker
runs batch.segment_one, exactly what the one-process loop runs: the file's table rows recorded (batch.Tables),
its outputs written, the mask last. The client collects the outcomes as they complete (as_completed) and the
tables are rebuilt from the records at the end, in input order (Tables.finish), so masks, summary.csv,
objects.csv and tracks.csv are byte for byte those of a run without --cluster, and a rerun of the same
command finishes only what is missing.

A worker that dies mid-file (out of memory, a lost node) is replaced by its nanny and the scheduler runs the
file again elsewhere; after 1 + distributed.scheduler.allowed-failures deaths (4) the file fails alone, one
line.
The workers must see the same files as the client (inputs, model, output folder): a cluster's shared disk.
Give workers one task slot each (`dask worker --nthreads 1`, as local:N and docs/slurm_example.py do) and the
cores to torch (--threads): a file's log lines are captured per worker process, and the model is the big thing.
Each task carries its small settings (~2.5 KB) rather than scattered data, which would be lost when every
worker of a long batch has been replaced (SLURM jobs ending at their walltime).
Nothing here imports dask until a Batch is made, so runs without --cluster never load it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import time
import uuid
from pathlib import Path

from synseg.segment.predict import log

PROGRESS_SECONDS = 5.0  # least time between two progress lines


def parse_cluster(text: str) -> str:
    """argparse type of --cluster: 'local', 'local:N', an address ('tcp://HOST:PORT', 'HOST:PORT') or a
    scheduler file ('scheduler.json'); returns the text."""
    kind, value = cluster_kind(text)
    if kind is None:
        raise argparse.ArgumentTypeError(f"--cluster {text!r}: {value}")
    return text


def cluster_kind(text: str) -> tuple[str | None, object]:
    """('local', N workers) | ('address', 'tcp://...') | ('file', path) for a --cluster value, or (None, why)."""
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2] or str(len(os.sched_getaffinity(0)))
        if not n.isdigit() or int(n) < 1:
            return None, "use local:N with N >= 1 worker processes (local alone: one per core)"
        return "local", int(n)
    if text.endswith(".json"):
        return "file", text
    if "://" in text:
        return "address", text
    host, sep, port = text.rpartition(":")
    if sep and host and port.isdigit():
        return "address", f"tcp://{text}"
    return None, "use local:N, tcp://HOST:PORT (a running Dask scheduler) or the path of its scheduler file (.json)"


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 40 s, 12 min, 3.5 h."""
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200
            else f"{seconds / 3600:.1f} h")


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --------------------------------------------------------------------------- on a worker

_LOADED: dict = {}  # in each worker process: the one Segmenter of the batch it serves, keyed by its settings


def worker_segmenter(cfg, task: str, threads: int | None):
    """(Segmenter, one line naming device, path and threads) for these settings, loaded once per worker process."""
    key = (cfg.model.resolve(), cfg.model.stat().st_mtime_ns, cfg.options, cfg.device, task, threads)
    if key not in _LOADED:
        import torch

        import unet
        from synseg import tasks
        from synseg.segment import predict

        if threads:
            torch.set_num_threads(threads)
        device = unet.get_device(cfg.device, verbose=False)
        model, info = unet.load_model(cfg.model, device)
        seg = predict.Segmenter(model, info, tasks.TASKS[task], cfg.options, device)
        _LOADED.clear()  # a worker serving a new batch drops the old model
        _LOADED[key] = seg, f"device {device}, {seg.path}, torch {torch.get_num_threads()} thread(s)"
    return _LOADED[key]


def loaded_segmenter(cfg, task: str, threads: int | None):
    """This worker's Segmenter for these settings (chunked.py's chunk tasks), loaded once."""
    return worker_segmenter(cfg, task, threads)[0]


def worker_threads(threads: int | None, slots_by_host: dict[str, int]) -> int:
    """Torch threads on this worker: `threads`, else this host's cores shared among the task slots on it."""
    if threads:
        return threads
    from distributed import get_worker

    worker = get_worker()
    slots = slots_by_host.get(worker.address.rpartition(":")[0], worker.state.nthreads)
    return max(1, cores() // max(1, slots))


def segment_task(segment_one, cfg, task: str, tables, src: Path, dst: Path, threads: int | None,
                 slots_by_host: dict[str, int], cwd: str) -> dict:
    """One file on a worker: batch.segment_one with this worker's Segmenter; its log lines come back to the client.

    The worker works in the client's folder `cwd` (the same path on a shared disk), so relative input and output
    paths mean what they mean to the client and the tables name them as a run without --cluster does."""
    from distributed import get_worker

    if os.getcwd() != cwd:
        os.chdir(cwd)
    t0 = time.perf_counter()
    text = io.StringIO()
    with contextlib.redirect_stderr(text):
        seg, setup = worker_segmenter(cfg, task, worker_threads(threads, slots_by_host))
        row, error = segment_one(seg, cfg, tables, src, dst)
    return {"row": row, "error": error, "log": text.getvalue(), "worker": get_worker().address, "setup": setup,
            "pid": os.getpid(), "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- on the client

class Batch:
    """The client side of a --cluster batch: submit files, yield their outcomes as they finish, close."""

    def __init__(self, cfg, task, tables, segment_one, total: int):
        """cfg: batch.Config (cfg.cluster says where); task: tasks.Task; tables: batch.Tables; segment_one: the
        per-file function (batch.segment_one); total: files to segment, for the progress line."""
        kind, value = cluster_kind(cfg.cluster)
        if kind is None:
            raise ValueError(value)
        import dask
        from dask.distributed import Client

        # the model by its absolute path: chunk tasks (chunked.py) may load it on a worker in another folder
        self.cfg = dataclasses.replace(cfg, model=cfg.model.resolve())
        self.task, self.tables, self.segment_one, self.cwd = task, tables, segment_one, os.getcwd()
        self.name, self.total, self.kind = task.script, total, kind
        self.futures: dict = {}
        self.cluster = None
        self.threads = cfg.threads
        if kind == "local":
            from dask.distributed import LocalCluster

            # one task at a time per worker process (the model is the big thing); torch gets the cores shared
            self.threads = cfg.threads or max(1, cores() // value)
            # the worker processes read it when they import distributed: their INFO notes stay out of our log
            os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
            self.cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.WARNING)
            self.client = Client(self.cluster)
            where = f"LocalCluster of {value} worker process(es), {self.threads} torch thread(s) each"
        else:
            with dask.config.set({"distributed.comm.timeouts.connect": "20s"}):
                self.client = (Client(scheduler_file=value, timeout="20s") if kind == "file"
                               else Client(value, timeout="20s"))
            where = f"scheduler {self.client.scheduler.address}"
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        self.slots_by_host: dict[str, int] = {}
        for address, w in workers.items():
            host = address.rpartition(":")[0]
            self.slots_by_host[host] = self.slots_by_host.get(host, 0) + int(w.get("nthreads", 1))
        slots = sum(self.slots_by_host.values())
        log(f"{self.name}: Dask {where}: {len(workers)} worker(s), {slots} task slot(s) now"
            + ("" if workers else " (files wait until workers join)")
            + (f"; dashboard {self.client.dashboard_link}" if self.cluster is None and self.client.dashboard_link
               else ""))
        self.seen: dict[str, str] = {}  # worker address -> its setup line, logged once
        self.t0 = time.perf_counter()

    def submit(self, src: Path, dst: Path) -> None:
        """Send one file to the cluster."""
        future = self.client.submit(segment_task, self.segment_one, self.cfg, self.task.name, self.tables, src, dst,
                                    self.threads, self.slots_by_host, self.cwd, key=f"segment-{self.task.name}-"
                                    f"{uuid.uuid4().hex}", pure=False)
        self.futures[future] = (src, dst)

    def results(self):
        """Yield (src, dst, summary row or None, error line or None) of each file in the order submitted, each as
        soon as it and every file before it are finished; the progress line and the workers' log lines come
        as files finish."""
        from dask.distributed import as_completed

        order = list(self.futures)
        finished, done, last, nxt = {}, 0, time.perf_counter(), 0
        for future in as_completed(order):
            finished[future] = self._outcome(future, self.futures[future][0])
            done += 1
            now = time.perf_counter()
            if now - last >= PROGRESS_SECONDS or done == len(order):
                rate = done / max(now - self.t0, 1e-9)
                log(f"{self.name}: {done}/{len(order)} file(s) done on the cluster, {rate:.3g} file(s)/s, "
                    f"about {duration((len(order) - done) / rate)} left")
                last = now
            while nxt < len(order) and order[nxt] in finished:
                src, dst = self.futures.pop(order[nxt])
                yield src, dst, *finished.pop(order[nxt])
                nxt += 1

    def _outcome(self, future, src: Path) -> tuple[dict | None, str | None]:
        """(row, error) of a finished future; the worker's log lines and, the first time, its setup logged."""
        from distributed import KilledWorker

        if future.status == "finished":
            out = future.result()
            if out["worker"] not in self.seen:
                self.seen[out["worker"]] = out["setup"]
                log(f"{self.name}: worker {out['worker']} (pid {out['pid']}): {out['setup']}")
            if out["log"]:
                log(out["log"].rstrip("\n"))
            return out["row"], out["error"]
        if future.status == "cancelled":
            return None, f"{src}: cancelled (the cluster went away); run the same command again"
        err = future.exception()
        if isinstance(err, KilledWorker):
            return None, (f"{src}: the workers segmenting it died {dask_allowed_failures() + 1} times (out of "
                          "memory? see the worker logs); not segmented")
        text = str(err).splitlines()[0] if str(err) else ""
        return None, f"{src}: {type(err).__name__}{': ' + text if text else ''}"

    def close(self) -> None:
        """Cancel what is still queued, disconnect, stop a local cluster (and clear what its killed workers left)."""
        from synseg import tiffio

        with contextlib.suppress(Exception):
            if self.futures:
                self.client.cancel(list(self.futures))
            if self.cluster is not None:
                # our own workers leave before the scheduler stops: stopped together, a worker's heartbeat can
                # meet the closed scheduler and print a traceback after a run that went well
                logging.getLogger("distributed.core").setLevel(logging.WARNING)  # its "connection closed" notes
                # every outcome is in: what our own workers say while they leave (a peer that left first) is noise
                self.client.run(_quiet_at_exit)
                self.client.retire_workers(close_workers=True)
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            # a worker that holds torch may take longer than the nanny's 4 s to exit and is then killed, with a
            # warning; its files are all written by now, so that is no news for the user
            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
            with contextlib.suppress(Exception):
                self.cluster.close()
            # a worker killed mid-write leaves .NAME.partPID files; its pid is gone now (remote pids are not ours
            # to judge: a remote cluster's leftovers go at the next run's start)
            tiffio.remove_stale_parts(self.tables.folder, recursive=True)


def dask_allowed_failures() -> int:
    """How many worker deaths a task survives before the scheduler gives up on it."""
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures"))


def _quiet_at_exit() -> None:
    """Run on a local cluster's workers when the batch is done: their shutdown chatter stays out of the log."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
