"""Open-vocabulary inference, the one path the ROS node, the bag evaluator and ``gausstr-eval`` share.

Modules: ``config`` (``InferenceConfig``) and ``predictor`` (``OccupancyPredictor``: camera batch ->
labels, confidence, Gaussians and rendered depth).
"""
