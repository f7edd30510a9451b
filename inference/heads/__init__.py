"""The head model (``head_model``: a FLAME-format linear head, pure numpy), head files
(``head_files``: the user's FLAME file, checked) and Cadence's own generated head
(``default_head``). Imported by the Blender side too, so nothing here imports more than numpy.
Imports only the base.
"""
