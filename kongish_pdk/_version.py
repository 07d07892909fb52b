"""The one place the package version lives (read by pyproject.toml and --version)."""

__version__ = "0.1.0"
