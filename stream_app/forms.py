"""Forms: the admin form of a notification, which checks that its audience names someone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.forms.fields import InvalidJSONInput
from django.http import QueryDict

from .filters import FilterError, compile_filter
from .models import Notification
from .requests import InvalidJSON, loads, parse_ids

__all__ = ["NotificationForm"]

Audience = Notification.Audience

if TYPE_CHECKING:
    _ModelForm = forms.ModelForm[Notification]
else:
    # Django's classes are not subscriptable at run time (django-stubs' generics are typing-only).
    _ModelForm = forms.ModelForm


def _is_id(value: object) -> bool:
    try:
        parse_ids([value])
    except ValueError:
        return False
    return True


class FilterField(forms.JSONField):
    """Filter data as JSON text; no filter shows as an empty box, not ``null``.

    The text goes through ``stream_app.requests.loads`` first: Django's own parse recurses per
    level of nesting and lets ``RecursionError`` (a 500) through, on saving and on re-rendering.
    """

    def prepare_value(self, value: Any) -> Any:
        """Render None as an empty string."""
        return "" if value is None else super().prepare_value(value)

    def to_python(self, value: Any) -> Any:
        """Refuse JSON text the shared parser refuses, with its reason."""
        if isinstance(value, str) and value.strip() and not self.disabled:
            try:
                loads(value)
            except InvalidJSON as exc:
                raise forms.ValidationError(f"Enter a valid JSON: {exc}.", code="invalid") from None
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        """Show refused text as typed, like any other invalid JSON."""
        if isinstance(data, str) and not self.disabled:
            try:
                loads(data)
            except InvalidJSON:
                return InvalidJSONInput(data)
        return super().bound_data(data, initial)


class NotificationForm(_ModelForm):
    """Validates the audience fields together, with errors on the field to fix."""

    state_filter = FilterField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "vLargeTextField"}),
        help_text=Notification._meta.get_field("state_filter").help_text,
    )

    class Meta:
        model = Notification
        fields = [
            "title",
            "body",
            "body_format",
            "level",
            "link",
            "channel",
            "audience",
            "users",
            "groups",
            "state_filter",
            "send_at",
            "expires_at",
        ]
        widgets = {
            "body": forms.Textarea(attrs={"rows": 4}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The admin's autocomplete widget looks the values it shows up in the database, and
        # fails (a 500) on one that is no id at all: submitted values (the field then gets an
        # error in clean()) and initial ones from the add view's query string (dropped).
        self._not_ids: list[str] = []
        for name in ("users", "groups"):
            initial = self.initial.get(name)
            if isinstance(initial, str | list):
                items = initial.split(",") if isinstance(initial, str) else initial
                self.initial[name] = [v for v in items if not isinstance(v, str) or _is_id(v)]
        if self.is_bound and isinstance(self.data, QueryDict):
            data = self.data.copy()
            for name in ("users", "groups"):
                key = self.add_prefix(name)
                values = data.getlist(key)
                kept = [value for value in values if _is_id(value)]
                if len(kept) != len(values):
                    data.setlist(key, kept)
                    self._not_ids.append(name)
            self.data = data

    def clean(self) -> dict[str, Any]:
        """Check the audience's own field, the advanced filter, and the dates' order."""
        data = super().clean() or {}
        for name in self._not_ids:
            self.add_error(name, "Choose from the list: a value sent was not an id.")
        audience = data.get("audience")
        if audience == Audience.USERS and not data.get("users"):
            self.add_error("users", "Choose at least one user for 'given users'.")
        if audience == Audience.GROUPS and not data.get("groups"):
            self.add_error("groups", "Choose at least one group for 'given groups'.")
        if audience == Audience.FILTER and "state_filter" not in self.errors:
            spec = data.get("state_filter")
            if spec is None:
                self.add_error("state_filter", "Enter a filter for 'advanced state filter'.")
            else:
                try:
                    compile_filter(spec)
                except FilterError as exc:
                    self.add_error(
                        "state_filter",
                        f"Invalid filter: {exc}. Use filter data such as "
                        '{"is_staff": true} or {"groups__contains": "ops"}.',
                    )
        send_at, expires_at = data.get("send_at"), data.get("expires_at")
        if send_at and expires_at and expires_at <= send_at:
            self.add_error("expires_at", "It would expire before it is sent.")
        return data
