"""A run directory: what ``tlzoo train`` writes and every later command reads.

- ``rundir``: a new run directory per run (``name``, ``name-2``, ...);
- ``runfiles``: the format, file by file (``classifier.json``, ``split.csv``, the head or the full model, ...);
- ``metrics``: the scores and plots a run records; ``model_card``: its README;
- ``trained``: a run loaded back (:class:`TrainedRun`); ``loading``: a run directory or an exported file opened
  as a classifier; ``inference``: predicting files with it; ``evaluation``: scoring it on labelled images.

The package sits below training (which writes runs) and above the model's parts and the input path (which a
loaded run uses to predict), so ``predict`` and ``evaluate`` never import the training loop.
"""
