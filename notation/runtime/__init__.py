"""The runtime, shared by the lowering and by training's optimizer: the environment variables read
once (environment), products split over two threads of ours (parallel, crew), loops fused in C
(fused, fused.c) and the timers behind notation.counting (counters).

    from notation.runtime import fused, parallel
    parallel.each(update, blocks)          # an optimizer's blocks on both cores
    fused.adam(...)                        # Adam's update in one C loop, numpy's bits
"""
from . import counters, crew, environment, fused, parallel  # noqa: F401  (the public modules, in the order they import each other)  # noqa: F401, I001
