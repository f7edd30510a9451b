"""Channels to editable keys: writing a take as actions and NLA tracks (``keyframes``), F-curve
helpers (``fcurves``), key reduction (``key_reduction``) and the take's sound strip (``sound``).
"""
