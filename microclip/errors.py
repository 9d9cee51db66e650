"""The errors whose message is meant for the user: a front end shows it in one line, without a traceback.

Anything else is a bug and keeps its traceback. The command lines and the app catch exactly this tuple.
"""

from __future__ import annotations

from microclip.backbone import BackboneError
from microclip.checkpoint import CheckpointError
from microclip.data.archives import ArchiveError
from microclip.data.descriptions import DescriptionsError
from microclip.data.errors import DatasetError, DatasetNotFoundError
from microclip.data.images import ImageError
from microclip.recipe import ConfigError

USER_ERRORS: tuple[type[Exception], ...] = (
    BackboneError,
    CheckpointError,
    ArchiveError,
    DescriptionsError,
    DatasetError,
    DatasetNotFoundError,
    ImageError,
    ConfigError,
    FileNotFoundError,
    ValueError,
)
