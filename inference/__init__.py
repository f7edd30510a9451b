"""Cadence inference: the worker-process side (audio, phonemes, tracking, models, training).

Kept free of heavy imports on purpose: the Blender side imports the light, pure-numpy modules
of this package (``protocol``, ``head_model``, ``head_files``, ``default_head``) directly.
"""
