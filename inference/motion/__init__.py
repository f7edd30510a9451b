"""Generic head motion, blinks and gaze from prosody (``head_motion``), and putting a whole take
together from audio (``animate``: lips + motion → channels). Imports ``lips``, ``audio``, ``heads``
and the base.
"""
