#!/usr/bin/env python3
"""A whole training run of a network's PyTorch twin, with the recipe `train.py` uses, epoch by epoch.

    python3 scripts/bench_training.py                       # seven-layer: Adam 1e-3, batch 64, 5 epochs
    python3 scripts/bench_training.py --network resnet --limit 6400

It prints each epoch's wall time, training images per second and test accuracy, as train.py does,
so that the engine's default run can be read against PyTorch's on the same machine.  The recipe is
the network's `training:` settings (optimizer Adam, its lr, batch size, epochs), the data the same;
the schedule and its warm-up take the engine's rates step by step, weight decay is AdamW's on the
weights the engine decays (two or more axes), and the images are augmented by the engine's own
augmentation, drawn as its run draws them.
PyTorch is optional: `.venv/bin/pip install torch==2.13.0`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, starting  # noqa: E402

with starting("bench_training.py"):
    import engine
    from engine import UserError
    from engine.training import augment, inputs, load_data, make_config, optim, schedule


def main(argv=None) -> int:
    p = Parser(prog="bench_training.py", description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "layers.yaml"), help="the spec (default layers.yaml)")
    p.add_argument("--network", help="a network of the spec (default: the spec's)")
    p.add_argument("--epochs", type=int, help="epochs (default: the network's training: settings)")
    p.add_argument("--limit", type=int, help="train on the first N training examples")
    p.add_argument("--threads", type=int, default=2, help="PyTorch's threads (default 2)")
    args = p.parse_args(argv)
    for flag in ("epochs", "limit", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag} {value}: give 1 or more")
    try:
        import torch
    except ImportError:
        print("bench_training.py: PyTorch is not installed; pip install torch==2.13.0 (a local CPU wheel)",
              file=sys.stderr)
        return 2
    import twins
    try:
        spec = engine.read(Path(args.spec))
        name = args.network or spec.network
        config = make_config(spec.training_for(name), name, {k: v for k, v in
                             (("epochs", args.epochs), ("limit", args.limit)) if v is not None})
        net = engine.load(spec, network=name, check=False)
        data = load_data(config, log=lambda *a: None)
        model = twins.build(net, config.batch_size)
    except (UserError, ValueError) as exc:
        print(f"bench_training.py: {exc.one_line() if hasattr(exc, 'one_line') else exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    dtype = twins.torch_dtype(torch, net)
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [w for w in params if optim.decays(w)], "weight_decay": config.weight_decay},
                             {"params": [w for w in params if not optim.decays(w)], "weight_decay": 0.0}], config.lr)
    x, y = inputs(data.train_x, net.input_shape, net.dtype), data.train_y
    tx, ty = inputs(data.test_x, net.input_shape, net.dtype), data.test_y
    steps = -(-len(y) // config.batch_size)
    rate = schedule.warmed(schedule.get(config.schedule), config.warmup * steps)
    names = augment.parse(config.augment)
    extras = [f"{config.schedule} schedule"] if config.schedule != "constant" else []
    extras += [f"warm-up {config.warmup} epochs"] if config.warmup else []
    extras += [f"weight decay {config.weight_decay:g}"] if config.weight_decay else []
    extras += [f"augment {config.augment}"] if config.augment != "none" else []
    print(f"{name}: PyTorch {torch.__version__} on {args.threads} threads, Adam lr {config.lr:g}, batch "
          f"{config.batch_size}, {config.epochs} epochs, {len(y)} training examples"
          + (f"; {', '.join(extras)}" if extras else ""))
    rng, total, step = np.random.default_rng(config.seed), 0.0, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(y))
        start = time.perf_counter()
        for batch, s in enumerate(range(0, len(y), config.batch_size)):
            idx = order[s:s + config.batch_size]
            images = augment.apply(names, x[idx], augment.batch_generator(config.seed, epoch - 1, batch))
            for group in opt.param_groups:
                group["lr"] = rate(config.lr, step, config.epochs * steps)
            opt.zero_grad()
            labels = torch.from_numpy(y[idx].astype(np.int64))
            model.loss(model(twins.to_torch(torch, images, dtype)), labels).backward()
            opt.step()
            step += 1
        seconds = time.perf_counter() - start
        total += seconds
        model.eval()
        with torch.no_grad():
            hits = sum(int((model(twins.to_torch(torch, tx[s:s + 1000], dtype)).argmax(1).numpy()
                            == ty[s:s + 1000]).sum()) for s in range(0, len(ty), 1000))
        print(f"epoch {epoch}/{config.epochs}: test accuracy {hits / len(ty):.2%} ({seconds:.1f} s, "
              f"{len(y) / seconds:.0f} img/s)", flush=True)
    print(f"done: {total:.1f} s of training, {config.epochs * len(y) / total:.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
