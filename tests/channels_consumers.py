"""The WebSocket consumer of the README's Channels section, served beside SSE by the tests."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from stream_app import get_channel
from stream_app.backends.channels import group_name


class NewsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add(group_name("news"), self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(group_name("news"), self.channel_name)

    async def stream_app_event(self, message):
        await self.send_json(
            {"id": message.get("id"), "event": message.get("event"), "data": message["data"]}
        )

    async def receive_json(self, content, **kwargs):
        await get_channel("news").abroadcast(content, "chat")
