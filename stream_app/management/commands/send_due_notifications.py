"""``manage.py send_due_notifications``: send scheduled notifications whose time has come.

Run it from cron every minute, on as many hosts as you like: each due notification is claimed
with one conditional UPDATE, so exactly one run sends it. Exits 1 if some could not be sent
(they stay due and the next run tries again).
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...backends import close_backends
from ...notifications.sending import DueReport, asend_due

__all__ = ["Command"]


class Command(BaseCommand):
    """Send due scheduled notifications, once each across every host."""

    help = "Send scheduled notifications whose send time has come (safe to run concurrently)."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--limit``: most notifications handled by one run."""
        parser.add_argument("--limit", type=int, default=100, help="most to send in this run")

    def handle(self, *args: Any, **options: Any) -> None:
        """Claim and send; report what was sent, what another run sent, what failed."""
        verbosity = options["verbosity"]

        def on_due(count: int) -> None:
            if verbosity >= 2:
                self.stdout.write(f"due: {count}")
                self.stdout.flush()

        async def run() -> DueReport:
            try:
                return await asend_due(limit=options["limit"], on_due=on_due)
            finally:
                await close_backends()

        report = asyncio.run(run())
        if verbosity >= 1:
            self.stdout.write(
                f"sent {len(report.sent)}, claimed elsewhere {len(report.claimed_elsewhere)}, "
                f"failed {len(report.failed)}"
            )
        if verbosity >= 2 and report.sent:
            self.stdout.write("sent ids: " + " ".join(str(pk) for pk in report.sent))
        if report.failed:
            raise CommandError(
                "could not send notifications " + ", ".join(str(pk) for pk in report.failed)
            )
