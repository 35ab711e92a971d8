"""The engine: layers.yaml compiled into planned contractions; forward, backprop and training.

    import engine
    net = engine.load("layers.yaml")
    loss, grads = net.loss_and_grads(x, labels)
"""
from .errors import SpecError, UserError
from .network import Network, load
from .spec import read

__all__ = ["load", "read", "Network", "SpecError", "UserError"]
