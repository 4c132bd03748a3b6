"""Operations: the composition root (``wiring``), scale-out coordination and migrations."""
