"""Open-vocabulary inference, the one path the ROS node, the bag evaluator and ``gausstr-eval`` share.

Modules: ``config`` (``InferenceConfig``) and ``predictor`` (``OccupancyPredictor``: camera batch ->
labels, confidence, Gaussians and rendered depth), with ``graphs`` (its CUDA-graph replay) and
``compile`` (its image backbone compiled with ``torch.compile``).
"""
