"""Stage 2 on the Blender side: renders of a take through the tracked camera (``render``), Train Refiner
(``train_refiner``) and Refine Video (``refine_video``); the worker's half is ``inference/refiner``."""
