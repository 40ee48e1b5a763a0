"""Write ``OUTDIR/EVAL.md`` for the demo model from the ``lotus2 evaluate`` results of train_demo_model.sh.

    python scripts/demo_model_report.py [--lotus1] WORKDIR OUTDIR SECONDS N

Reads ``WORKDIR/eval/{demo_sharpen4,demo_core,untrained,constant}/results.json`` (``--lotus1``, the
Lotus-1 demo of train_lotus1_demo_model.sh: ``{demo,untrained,constant}``; per-image depth metrics
included), prints the table and writes it with the model size and build time.
Depth AbsRel/δ1 are also split by scene kind: indoor and street frames behave very differently
under the disparity-space alignment (street ground reaches 300 m). The size is given on disk and
as stored in git (zlib): the release-rank zero padding of the LoRA files compresses away.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

RUNS = ("demo_sharpen4", "demo_core", "untrained", "constant")
LOTUS1_RUNS = ("demo", "untrained", "constant")


def main(argv: list[str]) -> int:
    lotus1 = argv[:1] == ["--lotus1"]
    if lotus1:
        argv = argv[1:]
    work, out, seconds, n = Path(argv[0]), Path(argv[1]), int(argv[2]), argv[3]
    by_model: dict[str, dict[str, dict]] = {}
    for name in LOTUS1_RUNS if lotus1 else RUNS:
        for r in json.loads((work / "eval" / name / "results.json").read_text()):
            by_model.setdefault(r["model"], {})[r["task"]] = r
    title = "Lotus-1 demo model" if lotus1 else "Demo model"
    lines = [f"# {title}: held-out figures ({n} synthetic frames, 160x128, scenes never trained on)", "",
             "Depth: AbsRel / δ1 after least-squares scale and shift in disparity space (the published "
             "protocol; depth range 1 mm – 1 km); normals: DSINE angular error.", "",
             "| model | depth AbsRel | depth δ1 | AbsRel indoor | AbsRel street | δ1 indoor | δ1 street "
             "| normal mean (°) | normal median (°) | normal < 11.25° (%) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, tasks in by_model.items():
        d, nm = tasks["depth"], tasks["normal"]["metrics"]
        kinds = {}
        for kind in ("indoor", "street"):
            rows = [p for p in d["per_image"] if p["name"].startswith(kind)]
            kinds[kind] = (statistics.mean(p["abs_rel"] for p in rows), statistics.mean(p["delta1"] for p in rows))
        m = d["metrics"]
        lines.append(f"| {model} | {m['abs_rel']:.3f} | {m['delta1']:.3f} | {kinds['indoor'][0]:.3f} | "
                     f"{kinds['street'][0]:.3f} | {kinds['indoor'][1]:.3f} | {kinds['street'][1]:.3f} | "
                     f"{nm['mean']:.1f} | {nm['median']:.1f} | {nm['a11.25']:.1f} |")
    size, stored = model_size(out)
    if lotus1:
        lines += ["", f"Model size: {stored / 2**20:.1f} MiB stored (zlib-compressed, as git stores it), "
                  f"{size / 2**20:.1f} MiB on disk (two pipeline folders, each with its U-Net, VAE and text encoder, "
                  f"as the releases are). scripts/train_lotus1_demo_model.sh ran {seconds / 60:.0f} min on this "
                  "machine (wall time of this run; a base model reused from an earlier run is not counted).", ""]
        (out / "EVAL.md").write_text("\n".join(lines))
        print("\n".join(lines))
        return 0
    lines += ["", f"Model size: {stored / 2**20:.1f} MiB stored (zlib-compressed, as git stores it), {size / 2**20:.1f} MiB "
              "on disk: the LoRA files are zero-padded from the trained rank 16 to the release ranks 128 / 256 that "
              f"the official inference hard-codes. scripts/train_demo_model.sh ran {seconds / 3600:.1f} h on "
              "this machine (wall time of this run; a base model reused from an earlier run is not counted).", ""]
    (out / "EVAL.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def model_size(folder: Path) -> tuple[int, int]:
    """Bytes of every file under ``folder``: on disk, and zlib-compressed (what a git repository stores)."""
    import zlib

    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return (sum(p.stat().st_size for p in files),
            sum(len(zlib.compress(p.read_bytes(), 6)) for p in files))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
