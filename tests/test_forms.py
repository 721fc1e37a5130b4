"""The notification form's cross-field checks, each error on the field to fix."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.forms import NotificationForm

pytestmark = pytest.mark.django_db

BASE = {
    "title": "Maintenance",
    "body_format": "plain",
    "level": "info",
    "channel": "notifications",
    "audience": "everyone",
}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"send_at": "2030-01-02 10:00", "expires_at": "2030-01-02 09:00"},
            "expires_at",
            "It would expire before it is sent.",
        ),
        (
            {"send_at": "2030-01-02 10:00", "expires_at": "2030-01-02 10:00"},
            "expires_at",
            "It would expire before it is sent.",
        ),
        ({"audience": "users"}, "users", "Choose at least one user"),
        ({"audience": "groups"}, "groups", "Choose at least one group"),
        ({"audience": "filter"}, "state_filter", "Enter a filter"),
        ({"audience": "filter", "state_filter": '{"plan__bogus": 1}'}, "state_filter", "Invalid"),
    ],
)
def test_notification_form_errors_name_the_field(
    fields: dict[str, Any], field: str, message: str
) -> None:
    form = NotificationForm(data={**BASE, **fields})
    assert not form.is_valid()
    assert list(form.errors) == [field]
    assert message in form.errors[field][0]


def test_notification_form_accepts_an_expiry_after_sending() -> None:
    form = NotificationForm(
        data={**BASE, "send_at": "2030-01-02 10:00", "expires_at": "2030-01-02 11:00"}
    )
    assert form.is_valid(), form.errors
