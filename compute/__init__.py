"""prunescope's offline compute step.

This package's own import loads no torch: the dashboard imports `compute.schema`,
`compute.snapshot` and `compute.validate`, which are torch-free. The torch half
(data, models, train, prune, corrupt, geometry, evaluate, pipeline) loads on demand.
"""
