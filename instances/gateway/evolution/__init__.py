"""Evolution API 2.3.7: the pool's gateway implementation today (field notes, contracts §1-§5)."""

from instances.gateway.evolution.client import WEBHOOK_EVENTS, WEBHOOK_SECRET_HEADER, EvolutionGateway
from instances.gateway.evolution.errors import normalize_messages

__all__ = ["WEBHOOK_EVENTS", "WEBHOOK_SECRET_HEADER", "EvolutionGateway", "normalize_messages"]
