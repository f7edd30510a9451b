"""The Cadence default head: a FLAME-format HeadModel generated from code (pure numpy + stdlib).

    from inference.heads.default_head import build_default_head, load_or_build, DEFAULT_HEAD_VERSION
"""

from .build import DEFAULT_HEAD_VERSION, build_default_head, cache_path, load_or_build

__all__ = ["DEFAULT_HEAD_VERSION", "build_default_head", "cache_path", "load_or_build"]
