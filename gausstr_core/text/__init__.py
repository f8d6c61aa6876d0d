"""The text side of open-vocabulary inference.

Modules: ``config`` (``TextEncoderConfig``; imports neither torch nor open_clip), ``encoder`` (the frozen
open_clip text tower, the Talk2DINO projection, ``PrototypeTable`` of fixed prototypes) and
``vocabulary`` (``Vocabulary``, ``OCC3D_CATEGORIES``, ``MAX_CATEGORIES``).
"""
