#!/usr/bin/env python3
"""The classes a trained network sees in new images, with their probabilities, named as its run named them.

    python3 scripts/predict.py --checkpoint runs/seven.npz shoe.png          # the top 3 classes
    python3 scripts/predict.py --checkpoint runs/seven.npz photos/ --top 1   # every image under a folder
    python3 scripts/predict.py --checkpoint runs/seven.npz new.npz --json    # an .npz's x (or x_test)

An image must have the network's input size (images are not resized); its channels are made the
network's (grey or RGB). Bad input is one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, starting  # noqa: E402

with starting("predict.py"):
    import numpy as np

    from engine import UserError
    from engine.errors import DataError
    from engine.training import restore


def parser() -> Parser:
    p = Parser(prog="predict.py", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or .npz files "
                   "holding x (or x_test): [n, h, w, c] uint8 or floats in [0, 1], or [n, features]")
    p.add_argument("--checkpoint", required=True, metavar="RUN.npz", help="a checkpoint written by train.py")
    p.add_argument("--spec", default=str(ROOT / "layers.yaml"), metavar="PATH",
                   help="the spec it was trained with (default: layers.yaml at the repository's root)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="how many classes to show (default: 3)")
    p.add_argument("--json", action="store_true", help="print the same as JSON: a list of {input, top: [{class, "
                   "probability}]}")
    return p


def examples(paths, net) -> tuple:
    """(names, x) of every input: images read at the network's channels, rows of .npz arrays."""
    from engine.data.folders import image_files, read_image

    names, rows = [], []
    shape = net.input_shape
    channels = shape[-1] if len(shape) == 3 and shape[-1] in (1, 3) else None
    for given in paths:
        path = Path(given)
        if path.suffix.lower() == ".npz" and path.is_file():
            x = npz_examples(path)
            names += [f"{path}[{i}]" for i in range(len(x))]
            rows += list(x)
            continue
        if path.is_dir():
            files = image_files(path)
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"{given}: no such file or folder; give image files, folders of images or .npz files")
        for f in files:
            names.append(str(f))
            rows.append(read_image(f, channels))
    for name, row in zip(names, rows):
        if (row.shape != shape) if len(shape) == 3 else (row.size != int(np.prod(shape))):
            what = f"{row.shape[1]}x{row.shape[0]} pixels of {row.shape[2]} channels" if row.ndim == 3 else \
                f"shape {row.shape}"
            want = f"{shape[1]}x{shape[0]} pixels of {shape[2]} channels" if len(shape) == 3 else f"shape {shape}"
            raise DataError(f"{name}: {what}, but the network takes {want}; images are not resized, so give inputs "
                            "of its size")
    return names, rows


def npz_examples(path) -> np.ndarray:
    """The examples of an .npz: its x, else its x_test; no pickles."""
    try:
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in ("x", "x_test") if k in z.files), None)
            if key is None:
                raise DataError(f"{path}: holds no array x or x_test (it holds {', '.join(z.files) or 'none'}); "
                                "save the examples to predict as x")
            x = z[key]
            return x[..., None] if x.ndim == 3 else x  # grey images [n, h, w]: one channel
    except ValueError as exc:
        raise DataError(f"{path}: not an .npz of numbers ({str(exc).splitlines()[0]}); save x as numbers") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc}); give an .npz of arrays") from None


def main(argv=None) -> int:
    o = parser().parse_args(argv)
    try:
        if o.top < 1:
            raise DataError("--top must be at least 1")
        ckpt = restore.load_checkpoint(o.checkpoint)
        back = restore.restored(ckpt, o.checkpoint, o.spec)
        names, rows = examples(o.inputs, back.net)
        x = np.stack([r.reshape(-1) if len(back.net.input_shape) != 3 else r for r in rows])
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError("the examples hold NaN or infinite values; give finite numbers")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            seen = "flip" if ckpt.meta["config"].get("test_augment") == "flip" else "none"  # as the run evaluated
            p = restore.probabilities(back.net, x, test_augment=seen)
    except UserError as exc:
        print(f"predict.py: {exc.one_line()}", file=sys.stderr)
        return 2
    k = min(o.top, p.shape[1])
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    found = [{"input": name, "top": [{"class": back.classes[c], "probability": float(p[i, c])} for c in order[i]]}
             for i, name in enumerate(names)]
    if o.json:
        print(json.dumps(found, indent=1))
    else:
        for row in found:
            print(f"{row['input']}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in row["top"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
