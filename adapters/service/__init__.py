"""The service, `campaign-fsm run`: the composition root that wires every edge to the core.

- `lifespan`: `Service`, one lifespan that starts everything in order and stops it in reverse;
- `intake`: `CommandIntake`, the commands topic into the orchestrator, dead letters;
- `ownership`: which campaigns this instance drives, from the consumer group's assignment;
- `metrics`: what `/metrics` exports, and the sink wrapper that counts results and transitions;
- `http`: the `/healthz`, `/readyz`, `/metrics` endpoint and the in-process server (`serve_asgi`).
"""

from .lifespan import Service

__all__ = ["Service"]
