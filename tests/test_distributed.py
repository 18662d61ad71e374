"""--cluster (distributed.py) and chunked images (chunked.py): a LocalCluster of two worker processes gives the
masks and tables of a one-process run, also when a worker is killed mid-batch; a chunked zarr image equals the
whole-image path."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from synseg import tiffio
from synseg.segment import distributed
from tests.conftest import ROOT
from tests.test_predict import smooth_noise

pytest.importorskip("dask.distributed")


def blobs(shape, seed=0, scale=3000.0):
    """A bright-spot uint16 image."""
    return (np.clip(smooth_noise(shape, seed=seed, sigma=1.5), 0, None) * scale + 100).astype(np.uint16)


def screen(folder, n=6, size=64):
    """n small images, one 4-frame time-lapse and a damaged TIFF: the folder of a tiny screen."""
    for k in range(n):
        tiffio.write_tiff(folder / f"cell{k:02d}.tif", blobs((size + 8 * (k % 3), size), seed=k), pixel_size_um=0.1)
    movie = np.stack([np.roll(blobs((48, 48), seed=99), 2 * t, axis=1) for t in range(4)])
    tiffio.write_tiff(folder / "movie.tif", movie, pixel_size_um=0.1, axes="TYX", frame_interval_s=0.5)
    (folder / "broken.tif").write_bytes((folder / "cell00.tif").read_bytes()[:300])
    return folder


FLAGS = ("--object-csv", "--track", "--threads", "1")


def one_line(err, *words):
    """The single stderr line holding every word; and no traceback."""
    assert "Traceback" not in err, err
    hits = [ln for ln in err.splitlines() if all(w in ln for w in words)]
    assert len(hits) == 1, (words, err)


def command(*args, timeout=300):
    """SynSeg_Vesicle.py in a subprocess: (exit code, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", SYNSEG_CACHE_DIR="")
    r = subprocess.run([sys.executable, str(ROOT / "SynSeg_Vesicle.py"), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=ROOT)
    return r.returncode, r.stderr


def files(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, models):
    """The screen segmented in one process (no --cluster): (input folder, its output files)."""
    d = tmp_path_factory.mktemp("screen")
    src = screen(d / "in")
    out = d / "out"
    code, err = command("-i", src, "-o", out, "-m", models["vesicle"], *FLAGS)
    assert code == 1, err  # the damaged file
    one_line(err, "broken.tif", "not a readable TIFF")
    ref = files(out)
    assert {"summary.csv", "objects.csv", "tracks.csv", "track_summary.csv"} <= {str(p) for p in ref}
    shutil.rmtree(out)
    return src, ref, d


def test_cluster_spec_parsing():
    assert distributed.cluster_kind("local:3") == ("local", 3)
    assert distributed.cluster_kind("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    assert distributed.cluster_kind("head:8786") == ("address", "tcp://head:8786")
    assert distributed.cluster_kind("/shared/scheduler.json") == ("file", "/shared/scheduler.json")
    for bad in ("local:0", "local:x", "nowhere"):
        assert distributed.cluster_kind(bad)[0] is None


def test_local_cluster_gives_the_one_process_results(reference, models):
    src, ref, d = reference
    out = d / "out"  # the same path as the reference run: the tables name the masks
    code, err = command("-i", src, "-o", out, "-m", models["vesicle"], *FLAGS, "--cluster", "local:2")
    try:
        assert code == 1, err
        one_line(err, "broken.tif", "not a readable TIFF")  # a bad file fails alone, one line
        assert "LocalCluster of 2 worker process(es)" in err
        assert err.count("device cpu") >= 2, err  # each worker's device and path, once
        assert "8/8 file(s) done on the cluster" in err
        got = files(out)
        assert sorted(got) == sorted(ref)
        for name, data in ref.items():
            assert got[name] == data, f"{name} differs from the one-process run"
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_a_worker_killed_mid_batch(reference, models):
    """Two worker processes of a running cluster; one is killed (SIGKILL) while it segments: the scheduler runs
    its file again on the other (and the nanny restarts it), and the tables equal the one-process run."""
    from dask.distributed import Client, LocalCluster

    src, ref, d = reference
    out = d / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        killed = {}

        def kill_one():
            """Kill a worker holding a segmentation task once a first mask is written (or 1 s after the first
            task started, should the files go faster than this loop looks)."""
            deadline, started = time.time() + 240, None
            while time.time() < deadline and not killed:
                busy = {w: keys for w, keys in client.processing().items()
                        if any(str(k).startswith("segment-") for k in keys)}
                started = started or (time.time() if busy else None)
                if busy and (any(out.glob("*_mask.tif")) or time.time() - started > 1.0):
                    victim = sorted(busy)[0]
                    os.kill(pids[victim], signal.SIGKILL)
                    killed[victim] = pids[victim]
                time.sleep(0.01)

        watcher = threading.Thread(target=kill_one, daemon=True)
        watcher.start()
        try:
            code, err = command("-i", src, "-o", out, "-m", models["vesicle"], *FLAGS, "--cluster",
                                cluster.scheduler_address)
            watcher.join(5)
            assert killed, "no worker was busy while the batch ran"
            assert code == 1, err
            one_line(err, "broken.tif", "not a readable TIFF")
            # the killed worker's partial file, if it was writing, goes at the next run's start (its pid is dead)
            code, err = command("-i", src, "-o", out, "-m", models["vesicle"], *FLAGS, "--cluster",
                                cluster.scheduler_address)
            assert code == 1 and "0 segmented, 7 skipped" in err, err
            got = files(out)
            assert sorted(got) == sorted(ref)  # no partial file of the killed worker is left either
            for name, data in ref.items():
                assert got[name] == data, f"{name} differs from the one-process run"
        finally:
            shutil.rmtree(out, ignore_errors=True)


def test_the_client_killed_then_the_same_command_again(reference, models):
    """The client (and with it its LocalCluster) killed outright once a first mask is written: the same command
    run again segments only what is missing, and the tables equal the one-process run."""
    import psutil

    src, ref, d = reference
    out = d / "out"
    args = [sys.executable, str(ROOT / "SynSeg_Vesicle.py"), "-i", str(src), "-o", str(out), "-m",
            str(models["vesicle"]), *FLAGS, "--cluster", "local:2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", SYNSEG_CACHE_DIR="")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not any(out.glob("*_mask.tif")):
            time.sleep(0.02)
        assert proc.poll() is None, "the batch ended before it could be killed"
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(family, timeout=30)  # the nannies see their parent gone and stop
        assert not alive, alive
        finished = len(list(out.glob("*_mask.tif")))
        assert 1 <= finished < 7
        code, err = command("-i", src, "-o", out, "-m", models["vesicle"], *FLAGS, "--cluster", "local:2")
        assert code == 1, err
        assert f"{7 - finished} segmented, {finished} skipped" in err, err
        got = files(out)
        assert sorted(got) == sorted(ref)
        for name, data in ref.items():
            assert got[name] == data, f"{name} differs from the one-process run"
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------- chunked images

def ome_zarr(path, image, chunks=(64, 64), px=0.1):
    """A one-level OME-Zarr 0.4 image with its pixel size."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "yx"]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [px, px]}]}]}]
    root.create_array("0", shape=image.shape, chunks=chunks, dtype=image.dtype)[:] = image
    return path


def test_chunked_probability_equals_the_whole_image(tmp_path, models):
    """Windows with the predictor's overlap as margin, on the pooling grid, and the whole plane's normalisation
    statistics from the chunk pass: each chunk's probabilities are the whole image's up to float rounding."""
    import torch

    import unet
    from synseg import normalization, tasks
    from synseg.segment import chunked, predict

    image = blobs((200, 184), seed=5)
    src = ome_zarr(tmp_path / "img.zarr", image)
    model, info = unet.load_model(models["vesicle"], torch.device("cpu"))
    seg = predict.Segmenter(model, info, tasks.TASKS["vesicle"], predict.Options(precision="fp32", backend="torch"),
                            torch.device("cpu"))
    whole = seg.probability(image, 1.0, progress=False)
    local = lambda f, args: [f(*a) for a in args]  # noqa: E731
    stats = chunked.plane_stats(src, (), image.shape, image.dtype, 64, seg.norm, local)
    assert stats == normalization.normalization_stats(image, seg.norm)
    out = np.full(image.shape, np.nan, np.float32)
    for y0, y1, x0, x1, wy0, wy1, wx0, wx1 in chunked.windows(*image.shape, 64, seg.overlap):
        prob = chunked.chunk_probability(seg, image[wy0:wy1, wx0:wx1], stats)
        out[y0:y1, x0:x1] = prob[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, whole, atol=2e-5)  # float rounding of convolutions on other input sizes
    # a margin below the receptive radius would not do: the test can tell
    cut = np.full(image.shape, np.nan, np.float32)
    for y0, y1, x0, x1, wy0, wy1, wx0, wx1 in chunked.windows(*image.shape, 64, 4):
        prob = chunked.chunk_probability(seg, image[wy0:wy1, wx0:wx1], stats)
        cut[y0:y1, x0:x1] = prob[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
    assert np.abs(cut - whole).max() > 1e-3


def test_chunked_zarr_and_tiff_masks_and_objects_equal_the_in_memory_path(tmp_path, models):
    """The command line on an OME-Zarr, and on a TIFF read as zarr (--chunk-size), in 64 px chunks, in this
    process and on a LocalCluster: the same mask
    and the same objects (each counted once, also on chunk borders) as the TIFF segmented whole; the mask is an
    OME-Zarr with the input's pixel size."""
    import csv

    import zarr

    image = blobs((200, 184), seed=5)
    tif = tmp_path / "img.tif"
    tiffio.write_tiff(tif, image, pixel_size_um=0.1)
    src = ome_zarr(tmp_path / "img.zarr", image)
    flags = ["-m", models["vesicle"], "--object-csv", "--no-contrast-cut", "--min-distance", "3", "--threads", "1",
             "--precision", "fp32"]
    runs = {"whole": ("-i", tif, "-o", tmp_path / "whole"), "zarr": ("-i", src, "-o", tmp_path / "zarr",
                                                                    "--chunk-size", "64"),
            "tiff": ("-i", tif, "-o", tmp_path / "tiff", "--chunk-size", "64"),
            # the chunks as tasks of a LocalCluster (worker_client): they spread over both workers
            "cluster": ("-i", src, "-o", tmp_path / "cluster", "--chunk-size", "64", "--cluster", "local:2")}
    masks, objects = {}, {}
    for name, args in runs.items():
        code, err = command(*args, *flags)
        assert code == 0, err
        out = tmp_path / name
        if name == "whole":
            masks[name] = tiffio.read_image(out / "img_mask.tif")[0]
        else:
            assert "12 chunk(s) of 64 px" in err
            group = zarr.open_group(str(out / "img_mask.zarr"), mode="r")
            masks[name] = np.asarray(group["0"])
            scale = group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
            assert scale == [0.1, 0.1]
        with open(out / "objects.csv", newline="") as fh:
            objects[name] = sorted((round(float(r["centroid_y"]), 6), round(float(r["centroid_x"]), 6), r["area_px"]
                                    if "area_px" in r else r["area"]) for r in csv.DictReader(fh))
    assert masks["whole"].any()
    assert len(objects["whole"]) > 20
    for name in ("zarr", "tiff", "cluster"):
        differ = np.count_nonzero(masks[name] != masks["whole"])
        assert differ == 0, f"{name}: {differ} px differ"
        assert objects[name] == objects["whole"], name


def test_a_damaged_zarr_is_one_line(tmp_path, models):
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / ".zgroup").write_text('{"zarr_format": 2}')
    (bad / ".zattrs").write_text("{not json")
    code, err = command("-i", bad, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 1
    one_line(err, "bad.zarr", "cannot be read as a chunked image")
    assert not (tmp_path / "out" / "bad_mask.zarr").exists()


def test_without_cluster_dask_is_never_imported(tmp_path, models):
    """A run without --cluster loads neither dask nor zarr (the one-process path as it was)."""
    image = tmp_path / "a.tif"
    tiffio.write_tiff(image, blobs((48, 48)))
    code = ("import sys; from synseg.segment import segment_vesicle as s; "
            f"c = s.main(s.get_args_parser().parse_args(['-i', {str(image)!r}, '-o', {str(tmp_path / 'out')!r}, "
            f"'-m', {str(models['vesicle'])!r}, '--object-csv'])); "
            "print(c, sorted(m for m in ('dask', 'distributed', 'zarr') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.stdout.split("\n")[-2] == "0 []", (r.stdout, r.stderr)


def test_chunked_skeleton_of_thin_filaments_is_the_whole_planes():
    """Filaments 3 px wide: summed over 128 px chunks (40 px margins), the skeleton length is within 2% of the
    whole plane's (about one px short per filament crossing a chunk border) and the junctions within 2; a
    skeleton drawn on the cut masks instead (no margin) misses junctions."""
    import cv2

    from synseg.segment import chunked, postprocess

    rng = np.random.default_rng(0)
    mask = np.zeros((600, 560), np.uint8)
    for _ in range(25):
        points = np.cumsum(rng.normal(0, 12, (12, 2)), axis=0) + rng.uniform(0, 560, 2)
        cv2.polylines(mask, [points.astype(np.int32)], False, 1, thickness=3)
    mask = mask.astype(bool)
    length, junctions = postprocess.skeleton_stats(mask)
    assert junctions > 50

    def summed(margin):
        total, count = 0.0, 0
        for y0, y1, x0, x1, wy0, wy1, wx0, wx1 in chunked.windows(*mask.shape, 128, margin):
            got = chunked.chunk_skeleton(mask[wy0:wy1, wx0:wx1], (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0)))
            total, count = total + got[0], count + got[1]
        return total, count

    chunked_length, chunked_junctions = summed(40)
    assert abs(chunked_length - length) < 0.02 * length
    assert abs(chunked_junctions - junctions) <= 2
    assert abs(summed(0)[1] - junctions) > 2
