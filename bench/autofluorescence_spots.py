"""Spots beside and on bright cells: the proxy for the hidden smFISH-beside-autofluorescent-cells case.

Example:
    .venv/bin/python bench/autofluorescence_spots.py --output-dir /tmp/synseg_autofluor

The hidden case loses precision (0.62) because calls fall in mottled cytoplasm and on bright cell bodies. Here
the bright, textured bodies are real: the shared nuclei image (../shared/realdata/nuclei/img2d.tif, 125
labelled nuclei, Hoechst-like texture) plays the autofluorescent cells, and its label image says which pixels
are a body. Spots are pasted everywhere (bench/faint_spots.py's Gaussians: sigma 1.0-1.6 px, peak = SNR x the
local noise, >= 8 px apart), so a spot on a body is as real as one beside it; the image itself has no spots.
Four 256 x 256 crops (the corners' quarters), 3 densities (40, 80, 120 spots), SNR 3, 5, 10; the bodies'
brightness is scaled x1, x3 and x10 (brighter autofluorescence, same texture) around the crop's background.
Reported per method (SynSeg_Vesicle.py defaults from --repo, LoG at 0.05 / 0.1 / 0.2): F1 (precision /
recall) pooled, and the false calls per 10,000 px on bodies and off bodies; the lower the false calls on
bodies the less the method over-calls beside bright cells. Not part of `make test`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import faint_spots as fs  # noqa: E402
import realdata_benchmark as rb  # noqa: E402
from synseg import cli  # noqa: E402
from synseg import metrics  # noqa: E402
from synseg import tiffio  # noqa: E402

CROP = 256
SNRS = (3.0, 5.0, 10.0)
DENSITIES = (40, 80, 120)
BODY_GAINS = (1.0, 3.0, 10.0)


def crops(image: np.ndarray, labels: np.ndarray):
    """The four corner crops of CROP x CROP (image, body mask)."""
    h, w = image.shape
    for y0 in (0, h - CROP):
        for x0 in (0, w - CROP):
            yield y0, x0, image[y0:y0 + CROP, x0:x0 + CROP].astype(np.float32), labels[y0:y0 + CROP,
                                                                                        x0:x0 + CROP] > 0


def build(data: Path, out: Path, seed: int) -> list[dict]:
    """Write the pasted crops and return one record per image."""
    image = np.squeeze(tiffio.read_image(data / "nuclei" / "img2d.tif")[0]).astype(np.float32)
    labels = np.squeeze(tiffio.read_image(data / "nuclei" / "mask2d.tif")[0])
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for k, (y0, x0, crop, body) in enumerate(crops(image, labels)):
        background = float(np.median(crop[~body])) if np.any(~body) else float(np.median(crop))
        for gain in BODY_GAINS:
            scene = background + (crop - background) * np.where(body, gain, 1.0).astype(np.float32)
            noise = fs.local_noise(scene)
            nothing = np.zeros(scene.shape, bool)
            for density in DENSITIES:
                pos = fs.place(rng, density, scene.shape, nothing)
                sigma = rng.uniform(*fs.SIGMA_PX, len(pos))
                ij = np.rint(pos).astype(int)
                for snr in SNRS:
                    name = f"nuclei_c{k}_g{gain:g}_n{density}_snr{snr:g}"
                    fs._write(out / "images" / f"{name}.tif",
                              fs.paste(scene, pos, snr * noise[ij[:, 0], ij[:, 1]], sigma))
                    records.append(dict(name=name, gain=gain, snr=snr, density=density, truth=pos, body=body))
    return records


def calls_of(path: Path, masks: dict, name: str) -> dict:
    """{method: (n, 2) calls} for one image."""
    import tifffile

    image = tifffile.imread(path)
    calls = {}
    if name in masks:
        calls["SynSeg"] = metrics.component_centroids(rb.read_binary(masks[name]), connectivity=2)
    for t in fs.LOG_THRESHOLDS:
        calls[f"LoG {t:g}"] = rb.log_points(image, t)
    return calls


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "realdata", help="the shared real data")
    p.add_argument("--output-dir", type=Path, default=Path("/tmp/synseg_autofluor"), help="images, masks, tables")
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose SynSeg_Vesicle.py and model run")
    p.add_argument("--seed", type=int, default=2027, help="spot positions and sizes")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for the SynSeg run")
    return p


def main(args: argparse.Namespace) -> int:
    """Build, segment, score, print."""
    if not (args.data_dir / "nuclei" / "img2d.tif").is_file():
        print(f"autofluorescence_spots.py: {args.data_dir}: shared nuclei image not found (see --data-dir)",
              file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    out = args.output_dir
    records = build(args.data_dir, out, args.seed)
    masks, reason, _ = rb.run_synseg("vesicle", sorted((out / "images").glob("*.tif")), out, args.repo, args.timeout)
    if reason:
        print(f"SynSeg: {reason}", file=sys.stderr)
    pooled = {}
    for rec in records:
        body = rec["body"]
        for method, yx in calls_of(out / "images" / f"{rec['name']}.tif", masks, rec["name"]).items():
            s = fs.score(yx, rec["truth"], np.zeros(body.shape, bool))
            # false calls: calls matched to no pasted spot, split by where they sit
            yx = np.asarray(yx, np.float64).reshape(-1, 2)
            pairs = metrics.match_points(yx, rec["truth"], fs.TOL_PX)
            used = np.zeros(len(yx), bool)
            for i, _ in pairs:
                used[i] = True
            c = np.clip(np.rint(yx[~used]).astype(int), 0, np.array(body.shape) - 1)
            on = int(body[c[:, 0], c[:, 1]].sum())
            for key in ((rec["gain"], rec["snr"], method), ("all", rec["snr"], method)):
                acc = pooled.setdefault(key, {"tp": 0, "fp": 0, "fn": 0, "fp_on": 0, "fp_off": 0, "px_on": 0,
                                              "px_off": 0})
                for k in ("tp", "fp", "fn"):
                    acc[k] += s[k]
                acc["fp_on"] += on
                acc["fp_off"] += int((~used).sum()) - on
                acc["px_on"] += int(body.sum())
                acc["px_off"] += int(body.size - body.sum())
    methods = sorted({k[2] for k in pooled}, key=lambda m: (m != "SynSeg", m))
    lines = ["## Spots pasted on the real nuclei image (bright textured bodies), F1 (precision / recall) and "
             "false calls per 10^4 px on bodies / off bodies", "",
             "| body brightness | SNR | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    results = {}
    for gain in (*BODY_GAINS, "all"):
        for snr in SNRS:
            cells = []
            for m in methods:
                a = pooled[(gain, snr, m)]
                f, p, r = fs.prf(a)
                on, off = 1e4 * a["fp_on"] / max(a["px_on"], 1), 1e4 * a["fp_off"] / max(a["px_off"], 1)
                results.setdefault(str(gain), {}).setdefault(m, {})[snr] = dict(f1=f, precision=p, recall=r,
                                                                                fp_on=on, fp_off=off)
                cells.append(f"{f:.3f} ({p:.2f} / {r:.2f}); {on:.1f} / {off:.1f}")
            lines.append(f"| {'pooled' if gain == 'all' else f'x{gain:g}'} | {snr:g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    (out / "autofluorescence_spots.md").write_text(text + "\n")
    (out / "autofluorescence_spots.json").write_text(json.dumps(results, indent=1))
    print(f"{len(records)} images, done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
