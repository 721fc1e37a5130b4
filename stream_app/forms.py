"""Forms: the admin form of a notification, which checks that its audience names someone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms

from .filters import FilterError, compile_filter
from .models import Notification

__all__ = ["NotificationForm"]

Audience = Notification.Audience

if TYPE_CHECKING:
    _ModelForm = forms.ModelForm[Notification]
else:
    # Django's classes are not subscriptable at run time (django-stubs' generics are typing-only).
    _ModelForm = forms.ModelForm


class FilterField(forms.JSONField):
    """Filter data as JSON text; no filter shows as an empty box, not ``null``."""

    def prepare_value(self, value: Any) -> Any:
        """Render None as an empty string."""
        return "" if value is None else super().prepare_value(value)


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

    def clean(self) -> dict[str, Any]:
        """Check the audience's own field, the advanced filter, and the dates' order."""
        data = super().clean() or {}
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
