"""Cadence: voice-driven facial animation for FLAME-format heads in Blender.

Registration only: importing this package does no work (pytest and Blender both import it).
"""

from . import operators, panels


def register() -> None:
    panels.register()
    operators.register()


def unregister() -> None:
    operators.unregister()
    panels.unregister()
