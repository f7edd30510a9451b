"""Video in, head channels out: frames (``video``), MediaPipe landmarks (``face_landmarks``), the
head's landmark embedding (``landmark_rig``, also read by the Blender side), the fit (``fit``,
``fit_gn``), the detector's pose correction (``pose_calibration``) and the whole track (``track``).
Imports ``heads``, ``audio`` and the base.
"""
