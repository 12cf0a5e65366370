"""qaex: a simulated futures exchange with real-time DIFF push, built on trio."""

__version__ = "0.1.0"
