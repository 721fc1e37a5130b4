"""``manage.py broadcast <channel> <data> [--event E] [--filter JSON]``: publish from scripts.

Prints the event id. With the memory backend no server would receive it (this process serves
no streams): the command fails, naming the setting to change (``STREAM_APP["BACKEND"]``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...backends.base import BackendUnavailable
from ...channels import ChannelNameError, MessageTooLarge, get_channel, validate_channel_name
from ...filters import FilterError

__all__ = ["Command"]


class Command(BaseCommand):
    """Broadcast one event on a channel to every worker."""

    help = "Broadcast an event on a channel: broadcast <channel> <data> [--event E] [--filter J]"

    def add_arguments(self, parser: CommandParser) -> None:
        """Channel, data, and the optional event type and filter."""
        parser.add_argument("channel", help="channel name, e.g. news or user:42")
        parser.add_argument("data", help="the event data, sent as text")
        parser.add_argument("--event", default=None, help="event type (default: message)")
        parser.add_argument(
            "--filter", default=None, help='session state filter as JSON: {"is_staff": true}'
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Validate, publish, print the id."""
        try:
            channel = get_channel(validate_channel_name(options["channel"]))
        except ChannelNameError as exc:
            raise CommandError(str(exc)) from exc
        spec = None
        if options["filter"] is not None:
            try:
                spec = json.loads(options["filter"])
            except ValueError as exc:
                raise CommandError(f"--filter is not JSON: {exc}") from exc
        try:
            event_id = channel.broadcast(options["data"], options["event"], filter=spec)
        except FilterError as exc:
            raise CommandError(f"invalid --filter: {exc}") from exc
        except (MessageTooLarge, BackendUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:
            raise CommandError(f"invalid --event: {exc}") from exc
        self.stdout.write(event_id)
