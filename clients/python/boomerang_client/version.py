"""The client's version: read by the build for the distribution and sent as the User-Agent."""

__version__ = "0.1.0"
