"""The engine: layers.yaml compiled into planned contractions; forward, backprop and training.

    import engine
    net = engine.load("layers.yaml")
    loss, grads = net.loss_and_grads(x, labels)

Sub-packages by concern: compiler/ (the spec, its layers and networks, the load-time checks and
plans), training/ (settings, the loop, evaluation, checkpoints, optimizers), data/ (the data
sets, IDX files, downloads).
"""
from .compiler.network import Network, load
from .compiler.spec import read
from .errors import SpecError, UserError

__all__ = ["load", "read", "Network", "SpecError", "UserError"]
