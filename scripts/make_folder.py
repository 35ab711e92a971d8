#!/usr/bin/env python3
"""Write images of a named data set as a folder of class folders of PNGs, the form `train.py --data`
reads your own photos in: a way to try it, and proof that the size and channels come from the data.

    python3 scripts/make_folder.py runs/fashion32                    # 2,000 test images, 32x32 RGB
    python3 scripts/make_folder.py runs/digits --dataset mnist --count 500 --size 28 --grey

Each image is resized with Pillow (bilinear) and saved as <OUT>/<class>/<index>.png; a "/" in a class
name becomes "-" (T-shirt/top -> T-shirt-top). Needs Pillow: pip install '.[images]'.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, starting  # noqa: E402

with starting("make_folder.py"):
    import numpy as np

    from engine import UserError
    from engine.data import datasets


def parser() -> Parser:
    p = Parser(prog="make_folder.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", metavar="OUT", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(datasets.DATASETS),
                   help="whose test images (default: fashion-mnist)")
    p.add_argument("--count", type=int, default=2000, metavar="N", help="the first N test images (default: 2000)")
    p.add_argument("--size", type=int, default=32, metavar="PIXELS", help="width and height (default: 32)")
    p.add_argument("--grey", action="store_true", help="one channel (default: RGB, the grey repeated)")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's .gz files are (else the usual places)")
    return p


def main(argv=None) -> int:
    o = parser().parse_args(argv)
    try:
        from PIL import Image
    except ImportError:
        print("make_folder.py: writing PNGs needs Pillow, which is not installed: pip install '.[images]'",
              file=sys.stderr)
        return 2
    out = Path(o.out)
    if o.count < 1 or o.size < 1:
        print("make_folder.py: --count and --size must be at least 1", file=sys.stderr)
        return 2
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"make_folder.py: {out} exists and is not an empty folder; give a new folder", file=sys.stderr)
        return 2
    try:
        test = datasets.load(o.dataset, "test", data_dir=o.data_dir)
    except UserError as exc:
        print(f"make_folder.py: {exc.one_line()}", file=sys.stderr)
        return 2
    names = [c.replace("/", "-") for c in datasets.DATASETS[o.dataset].classes]
    n = min(o.count, len(test))
    for i in range(n):
        image = Image.fromarray(test.images[i]).resize((o.size, o.size), Image.BILINEAR)
        if not o.grey:
            image = image.convert("RGB")
        folder = out / names[int(test.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.png")
    counts = np.bincount(test.labels[:n], minlength=len(names))
    print(f"wrote {n} images of {o.size}x{o.size}x{1 if o.grey else 3} in {len(names)} class folders of {out} "
          f"({min(counts)}-{max(counts)} a class), from {test.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
