import asyncio

from stream_app import Event, SSEResponse


async def numbers(request):
    async def gen():
        for n in range(10):
            yield Event(data=str(n), event="tick", id=str(n))
            await asyncio.sleep(1)

    return SSEResponse(gen(), request=request)
