"""briefing stage (built in a later issue)."""

__all__: list[str] = []
