"""Blender's half of tracking: renders of the head for MediaPipe (``landmark_render``), the landmark
embedding solve (``landmark_solve``), the per-head calibration steps (``landmark_calibration``) and
matching the scene camera to the tracked video (``camera_match``).
"""
