"""assay: turn labelled judgements into served, reviewed and monitored models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("assay")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
