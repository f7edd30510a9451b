"""Building a Cadence rig from a head model (``build``: mesh, shape keys, bones, correctives),
finding its head model again (``head_cache``), its materials (``materials``) and the rotation maths
shared with the key writer (``rotations``). Imports the light ``inference.heads`` modules.
"""
