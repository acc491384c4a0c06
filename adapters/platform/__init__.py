"""The platform edge: the REST client, its OAuth token, the two API profiles and the notification
channels, for the guide's API and Genesys Cloud's.

- `client`: `PlatformClient`, the `Platform` port (fsm/ports.py) over HTTP: reads inside the
  profile's request budget, one POST per transition, failures mapped; `ClientStats` counts requests;
- `oauth`: `TokenManager`, OAuth client credentials, refreshed ahead of expiry;
- `profiles`: payloads of each profile translated to and from the core's snapshots;
- `notifications`: `NotificationChannels`, the WebSocket channels whose events become observations.
"""

from .client import ClientStats, PlatformClient
from .notifications import NotificationChannels

__all__ = ["ClientStats", "NotificationChannels", "PlatformClient"]
