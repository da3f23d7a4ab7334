"""Logging filters shared by the workflows that quiet vendor chatter they cannot act on."""

from __future__ import annotations

import logging


class DropMessage(logging.Filter):
    """Drops the records of one logger whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
