"""Cadence inference: the worker-process side, one subpackage per pipeline stage.

    audio → lips / motion → a take (generate);  video → tracking → persona;  take → refiner → frames

``protocol`` (the channel layout and worker messages) and ``files`` (input checks) are the base every
stage may use. Stages import downward only (checked by tests/test_layout.py):

    worker  →  motion, refiner  →  lips, tracking, persona  →  audio, heads  →  protocol, files

Kept free of heavy imports on purpose, like every package ``__init__`` here: the Blender side imports
the light, pure-numpy modules (``protocol``, ``heads``, ``tracking.landmark_rig``) directly.
"""
