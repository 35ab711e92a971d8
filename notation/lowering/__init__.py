"""The lowering: index terms become zero-copy views (views), each product a planned contraction
(lowering) run by one road (strategies, reductions, stacked, maxima), chosen once by rule or by
modelled cost on this machine's rates (roads, cost), its pairwise steps on np.matmul (steps)."""
