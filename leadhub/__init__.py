"""leadhub: a lead-intake hub. Shared wire types live here so connectors and pipelines never import each other."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leadhub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
