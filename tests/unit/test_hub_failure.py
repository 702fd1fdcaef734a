"""A web worker whose hub loop died must exit (the supervisor restarts it), not linger."""

from __future__ import annotations

import asyncio

import pytest

from leireye.web import hub


def test_a_failed_hub_loop_exits_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(hub.os, "_exit", exits.append)

    async def broken() -> None:
        raise RuntimeError("bug in the fan-out")

    async def ok() -> None:
        return None

    async def go() -> None:
        for body in (ok, broken):
            task = asyncio.create_task(body())
            await asyncio.wait({task})
            hub._exit_if_failed(task)

    asyncio.run(go())
    assert exits == [1]
