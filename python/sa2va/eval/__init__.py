"""Sa2VA's benchmarks with upstream's metrics: ``python -m sa2va.eval refcoco|refvos|gcg ...``.

Each command reads a benchmark in the layout of Sa2VA's data preparation, runs the model (keeping
one prediction per sample, so runs shard, resume and re-score), writes the files upstream's scorers
read, and prints the metrics computed as upstream computes them. See ``python -m sa2va.eval -h``.
The metric functions (metrics.py, cocoeval.py) and COCO masks (masks.py) need only numpy.
"""
