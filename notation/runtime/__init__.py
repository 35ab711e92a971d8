"""The runtime, shared by the lowering and by training's optimizer: the environment variables read
once (environment), products split over two threads of ours (parallel, crew), loops fused in C
(fused, fused.c), an optimizer's update of all its arrays in one C call per worker (foreach) and the
timers behind notation.counting (counters).

    from notation.runtime import foreach, parallel
    parallel.each(update, blocks)            # an optimizer's blocks on both cores (numpy's passes)
    foreach.Updates("adam", arrays, decays)  # Adam over all (w, m, v) at once, in C, numpy's bits
"""
from . import counters, crew, environment, foreach, fused, parallel  # noqa: F401  (the public modules)
