"""The control API's token: a file only the edge's service user may read.

The agent makes it at start if it is missing; `tracectl` on the line PC reads it from the
same place (TRACE_EDGE_STATE_DIR/control.token, or TRACE_EDGE_CONTROL_TOKEN_FILE) and
sends it as `Authorization: Bearer <token>`. Whoever can read the file may change batches
and dock bindings: the file's mode is the access control.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_BYTES = 32


class ControlTokenError(Exception):
    """The token file cannot be used as it is; the message says how to fix it."""


def load_or_create_token(path: Path) -> str:
    """The token in `path`, made (mode 0600, random) if the file does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path, private=True)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
    log.info("made the control API token %s (readable by this user only)", path)
    return read_token(path, private=True)


def read_token(path: Path, private: bool = False) -> str:
    """The token in `path`. `private`: refuse a file other users can read or write (the
    agent checks this; a client only needs to read it)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except OSError as err:
        raise ControlTokenError(
            f"cannot read the control API token {path}: {err.strerror}; run as the edge "
            "agent's user, or point TRACE_EDGE_STATE_DIR (or TRACE_EDGE_CONTROL_TOKEN_FILE) "
            "at the edge's own"
        ) from err
    except UnicodeDecodeError as err:
        raise ControlTokenError(
            f"the control API token {path} is not ASCII text: delete it and restart the "
            "edge agent, which makes a new one"
        ) from err
    if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ControlTokenError(
            f"the control API token {path} can be read or changed by other users (mode "
            f"{stat.S_IMODE(mode):03o}): chmod 600 {path}"
        )
    token = text.strip()
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ControlTokenError(
            f"the control API token {path} holds no usable token (at least 16 characters, "
            "no spaces): delete it and restart the edge agent, which makes a new one"
        )
    return token
