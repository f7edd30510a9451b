"""Stage 1 of the method, personalized: the audio → expression + pose network (``pose_net``), its
training (``train_pose``; the general-model CLI ``train_general``), persona files and making a
persona from a tracked clip (``persona``) and style statistics (``pose_style``). Imports ``audio``,
``heads`` and the base.
"""
