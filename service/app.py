"""The ASGI application: `granian --interface asginl --http auto service.app:app`."""

from __future__ import annotations

import logging
from pathlib import Path

import restate

from service.checkout import checkout
from service.config import settings
from service.gc_tuning import tune_gc
from service.seat_map import seat_map, seat_map_shard
from service.ticket import ticket

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

# Everything this deployment serves (tests add to it for a changed handler set).
SERVICES: list[restate.Service | restate.VirtualObject] = [
    ticket,
    checkout,
    seat_map,
    seat_map_shard,
]

logging.getLogger("nexus").info(
    "Nexus service version %s from %s", settings.version, Path(__file__).parent
)

app = restate.app(
    SERVICES,
    identity_keys=list(settings.identity_keys) or None,
)
tune_gc()  # last: after every import, so the frozen heap holds them all
