"""The worker process (``python -m inference.worker``): the message loop (``process``), the job
registry (``jobs``) and one module per job kind (``generate``, ``track``, ``personalize``,
``landmarks``). The top layer: it may import every stage; no stage imports it.
"""
