"""The engine: networks from layers.yaml, compiled contractions, forward, backprop, training."""
