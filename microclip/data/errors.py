"""The data errors, in a module of their own so that every data module can raise them."""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set that exists but cannot be used as given (layout, CSV content, class names)."""


class DatasetNotFoundError(FileNotFoundError):
    """The expected data folder or file is not there."""
