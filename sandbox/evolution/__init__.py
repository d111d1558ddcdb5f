"""The fake Evolution API 2.3.7 (see :mod:`.fake`)."""

from sandbox.evolution.fake import FakeEvolution, build_app, main
from sandbox.evolution.model import ACCEPTED_EVENTS, FINAL_CLOSE_CODES, QR_TTL_SECONDS, TRANSIENT_CLOSE_CODES

__all__ = ["ACCEPTED_EVENTS", "FINAL_CLOSE_CODES", "QR_TTL_SECONDS", "TRANSIENT_CLOSE_CODES", "FakeEvolution",
           "build_app", "main"]
