"""The service: settings, composition root, CLI (HTTP API and pages come in the service issue)."""

from server.container import build_indexer
from server.settings import Settings

__all__ = ["Settings", "build_indexer"]
