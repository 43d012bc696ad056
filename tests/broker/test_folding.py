"""``Folded``: asks made while a send is on its way become one more send, and a
closing owner chooses whether the send on its way finishes."""

from __future__ import annotations

import asyncio

from runyard.broker.folding import Folded


class Sends:
    """A send that waits until released, counting how many began and ended."""

    def __init__(self) -> None:
        self.began = 0
        self.ended = 0
        self.go = asyncio.Event()

    async def __call__(self) -> None:
        self.began += 1
        await self.go.wait()
        self.ended += 1


async def test_asks_made_while_a_send_is_on_its_way_cost_one_more_send() -> None:
    sends = Sends()
    folded = Folded(sends, "test")
    folded.ask()
    await asyncio.sleep(0)
    for _ in range(10):
        folded.ask()
    sends.go.set()
    await asyncio.sleep(0.01)
    assert (sends.began, sends.ended) == (2, 2)
    await folded.close()


async def test_closing_cancels_the_send_on_its_way_unless_asked_to_finish_it() -> None:
    for finish_sending, ended in ((False, 0), (True, 1)):
        sends = Sends()
        folded = Folded(sends, "test")
        folded.ask()
        await asyncio.sleep(0)
        folded.ask()  # folded behind the send on its way: never sent once closed
        closing = asyncio.ensure_future(folded.close(finish_sending=finish_sending))
        await asyncio.sleep(0)
        sends.go.set()
        await closing
        assert (sends.began, sends.ended) == (1, ended)
        folded.ask()  # closed: nothing more is sent
        await asyncio.sleep(0.01)
        assert sends.began == 1
