"""LeirEye's client for `/ws/capture`: asyncio (`LeirEyeClient`) and blocking (`iter_packets`,
`iter_stats`). See docs/clients.md.

    async with LeirEyeClient("ws://127.0.0.1:8000/ws/capture", token=TOKEN) as c:
        async for packet in c.packets(protocol="TCP", port=443):
            print(packet.src_ip, packet.info)

`stream = await c.subscribe_packets(...)` gives the same stream once the server has confirmed
the subscription: traffic caused after that is sure to be in it.
"""

from leireye.client.auth import CallableToken, PasswordLogin, StaticToken, TokenSource
from leireye.client.client import DEFAULT_URL, LeirEyeClient
from leireye.client.core import BACKOFF_S, Backoff, Gap, ResumeCursor
from leireye.client.errors import (
    AuthenticationError,
    CertificateMismatch,
    ClientError,
    ConnectionFailed,
    ProtocolError,
    SubscriptionError,
    TokenExpired,
)
from leireye.client.sync import iter_packets, iter_stats
from leireye.wire import (
    FlowData,
    FlowMessage,
    LimitsInfo,
    PacketData,
    StatsData,
    StatusData,
    UserInfo,
)

__all__ = [
    "BACKOFF_S",
    "DEFAULT_URL",
    "AuthenticationError",
    "Backoff",
    "CallableToken",
    "CertificateMismatch",
    "ClientError",
    "ConnectionFailed",
    "FlowData",
    "FlowMessage",
    "Gap",
    "LeirEyeClient",
    "LimitsInfo",
    "PacketData",
    "PasswordLogin",
    "ProtocolError",
    "ResumeCursor",
    "StaticToken",
    "StatsData",
    "StatusData",
    "SubscriptionError",
    "TokenExpired",
    "TokenSource",
    "UserInfo",
    "iter_packets",
    "iter_stats",
]
