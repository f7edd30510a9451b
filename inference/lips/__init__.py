"""The lip engine, which needs no training: phones from speech (``phonemes``, bottom layer;
``closures`` adds acoustically found lip closures; ``recognition_pool`` and ``phone_stream`` feed
whole takes), phones to visemes (``visemes``, ``coarticulation``) and to mouth curves (``lipsync``).
Imports ``audio``, ``heads`` and the base; never ``motion``, ``tracking``, ``persona`` or ``worker``.
"""
