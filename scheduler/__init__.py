"""flavor-scheduler: the background jobs of the Flavor Entertainers booking platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flavor-scheduler")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
