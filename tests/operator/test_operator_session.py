"""session.py: kopf's requests are bounded, its watches are not (against a real aiohttp server)."""

import asyncio

import aiohttp
from aiohttp import web
from vibecraft_operator.session import Throttle


def test_at_most_limit_requests_run_at_once_and_watches_pass_by() -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        running = {"calls": 0, "peak": 0, "watches": 0}
        release = asyncio.Event()

        async def handle(request: web.Request) -> web.Response:
            if request.query.get("watch") == "true":
                running["watches"] += 1
                return web.Response(text="watch")
            running["calls"] += 1
            running["peak"] = max(running["peak"], running["calls"])
            await release.wait()
            running["calls"] -= 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        connector = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(connector=connector, middlewares=(Throttle(3),)) as session:
                async def get(path: str) -> int:
                    async with session.get(f"http://127.0.0.1:{port}{path}") as rsp:
                        await rsp.read()
                        return rsp.status

                calls = [asyncio.create_task(get(f"/apis/x/{i}")) for i in range(10)]
                await asyncio.sleep(0.3)
                held = running["peak"]
                # The three in flight hold every slot; watches still go through.
                watches = await asyncio.wait_for(asyncio.gather(*(get("/apis/x?watch=true") for _ in range(4))), 5)
                release.set()
                statuses = await asyncio.wait_for(asyncio.gather(*calls), 10)
        finally:
            await runner.cleanup()
        assert watches == [200] * 4
        return held, running["peak"], statuses

    held, peak, statuses = asyncio.run(scenario())
    assert held == 3 and peak == 3, (held, peak)
    assert statuses == [200] * 10
