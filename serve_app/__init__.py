"""funasr-serve: FunASR speech recognition as a Ray Serve deployment graph."""

__version__ = "0.1.0"
