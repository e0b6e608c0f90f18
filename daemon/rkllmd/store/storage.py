"""The one mapping from a filesystem failure in the models dir to the client's error."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from ..errors import InsufficientStorage, StorageError


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """A filesystem failure changing the models dir is the client's to know, by code
    (read-only mount, permissions, a name too long), not an internal error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the models directory ran out of space") from None
        reason = exc.strerror or type(exc).__name__
        raise StorageError(f"the models directory cannot be changed: {reason}") from None
