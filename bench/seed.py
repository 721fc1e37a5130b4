"""``python -m bench.seed --sessions N --out FILE``: migrate and fill the realistic profile's
database (``BENCH_DB_PATH``, settings ``bench.benchproject.realistic``).

- ``N`` users, each with one logged-in session (as ``django.contrib.auth.login`` leaves it:
  user id, backend and the session auth hash), written as rows so that the server looks them
  up like any other session; their passwords are unusable (no hashing to pay for here);
- ``NOTIFICATIONS`` sent notifications on ``notifications`` for everyone, as a project that
  uses them has: each connection's backlog query finds them and delivers them.

Writes ``[[session_key, user_pk], ...]`` as JSON to ``FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path

NOTIFICATIONS = 3


def seed(sessions: int, out: Path) -> None:
    """Migrate, then create the users, their sessions and the notifications."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from stream_app.models import Notification

    call_command("migrate", verbosity=0, interactive=False)
    users = [User(username=f"bench{i}", password="!unusable") for i in range(sessions)]
    User.objects.bulk_create(users, batch_size=500)
    store = SessionStore()
    expire = timezone.now() + timedelta(days=14)
    rows, identities = [], []
    for user in User.objects.order_by("pk"):
        key = get_random_string(32)
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
        identities.append([key, user.pk])
    Session.objects.bulk_create(rows, batch_size=500)
    now = timezone.now()
    Notification.objects.bulk_create(
        Notification(title=f"Notice {i}", body="Seeded by the benchmark.", sent_at=now)
        for i in range(NOTIFICATIONS)
    )
    out.write_text(json.dumps(identities))


def main() -> None:
    """Parse the arguments and seed."""
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.benchproject.realistic")
    seed(args.sessions, args.out)


if __name__ == "__main__":
    main()
