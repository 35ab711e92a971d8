#!/usr/bin/env python3
"""Export a trained network for other runtimes: its checkpoint as an ONNX graph, in eval mode.

    python3 scripts/export.py --checkpoint runs/seven.npz --format onnx --out seven.onnx

The graph takes `images` [batch, height, width, channels] (NHWC float32, pixels in [0, 1], as the engine
takes them) and gives `probabilities` [batch, classes]; batch norm runs on its running statistics and
dropout is left out.  The class names the run recorded are in the model's metadata (`classes`, JSON).
Before it is written, the graph is run by onnx's reference evaluator beside the engine on random images
and must agree layer by layer.  A kind with no ONNX form, a checkpoint that is not one, or an output
that cannot be written is one line and exit code 2; the file is written whole or not at all.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, starting  # noqa: E402

with starting("export.py"):  # Ctrl-C while numpy loads: one line, not a traceback
    import engine
    from engine import export as exporting
    from engine.errors import rename
    from engine.training import outputs, restore
    from notation.runtime import environment

FLAGS = ("checkpoint", "spec", "out")


def flags(text: str) -> str:
    """An engine message with the options it names (`checkpoint`) as this script's flags (--checkpoint)."""
    return rename(text, lambda name: f"--{name}", FLAGS)


def parser() -> Parser:
    p = Parser(prog="export.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="the run's checkpoint (.npz) to export")
    p.add_argument("--format", choices=sorted(exporting.FORMATS), default="onnx", help="the format (default onnx)")
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write (replaced whole if it exists)")
    p.add_argument("--spec", default=str(ROOT / "layers.yaml"), metavar="PATH",
                   help="the spec the run was trained with (default: layers.yaml)")
    return p


def described(ckpt, net, path) -> dict:
    """What the model's metadata says of where it came from: the network, the checkpoint, its training."""
    meta = ckpt.meta
    data = (meta.get("config") or {}).get("dataset") or meta.get("data_name") or "its own data"
    about = {"network": net.name, "checkpoint": Path(path).name,
             "trained": f"{meta.get('epoch')} epochs, step {meta.get('step')}, on {data}"}
    if isinstance(meta.get("data_fingerprint"), str):
        about["data_fingerprint"] = meta["data_fingerprint"]
    return about


def main(argv=None) -> int:
    o = parser().parse_args(argv)
    try:
        environment.check()
        outputs.check_distinct({"spec": o.spec, "checkpoint": o.checkpoint, "out": o.out})
        exporting.check_out(o.out)
        started = time.perf_counter()
        back = restore.restored(restore.load_checkpoint(o.checkpoint), o.checkpoint, o.spec)
        net, ckpt, classes = back.net, back.ckpt, back.classes
        about = described(ckpt, net, o.checkpoint)
        size = exporting.export(net, o.format, o.out, classes, about)
        seconds = time.perf_counter() - started
    except engine.UserError as exc:
        print(f"export.py: {flags(exc.one_line())}", file=sys.stderr)
        return 2
    shape = ", ".join(map(str, net.input_shape))
    print(f"{o.out}: network {net.name!r} as {o.format.upper()} ({size / 1e6:.2f} MB, checked against the engine, "
          f"{seconds:.1f} s): images [batch, {shape}] (NHWC float32 in [0, 1]) -> probabilities [batch, "
          f"{net.classes}]; classes {', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''}")
    if ckpt.meta["config"].get("test_augment") == "flip":
        print("note: the run saw each test image also mirrored (test_augment flip) and the graph is one pass: "
              "to predict as it did, average the probabilities of an image and of its mirror image")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("export.py: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
