"""``{% notifications_ui %}`` rendered from async code: the user comes from the context."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import SynchronousOnlyOperation
from django.template import engines
from django.test import RequestFactory, override_settings
from django.utils.functional import SimpleLazyObject

from stream_app.templatetags.notification_tags import notification_channels

pytestmark = pytest.mark.django_db(transaction=True)

# As django.shortcuts.render renders: the view's context over the context processors' one.
TEMPLATE = engines["django"].from_string("{% load notification_tags %}{% notifications_ui %}")


async def lazy_user_request() -> tuple[object, User]:
    """A request whose ``user`` is lazy, as AuthenticationMiddleware leaves it."""
    user = await sync_to_async(User.objects.create_user)("reader", password="pw")
    request = RequestFactory().get("/")
    request.user = SimpleLazyObject(lambda: User.objects.get(pk=user.pk))  # type: ignore[assignment]
    return request, user


async def test_notifications_ui_renders_for_the_user_an_async_view_put_in_the_context() -> None:
    request, user = await lazy_user_request()
    html = TEMPLATE.render({"user": user}, request)
    assert f"user:{user.pk}" in html
    assert 'data-authenticated="true"' in html


async def test_notifications_ui_in_async_code_without_a_user_says_how_to_fix_it() -> None:
    request, _user = await lazy_user_request()
    with pytest.raises(SynchronousOnlyOperation, match=r"await request\.auser\(\)"):
        TEMPLATE.render({}, request)


async def allow_everything(user: object, channel: str) -> bool:
    """An async CAN_SUBSCRIBE hook (templates render synchronously: they cannot await it)."""
    return True


# A project that has not mounted stream_app's URLs (this module is its ROOT_URLCONF).
urlpatterns: list[object] = []


def test_notification_channels_with_an_async_hook_use_the_default_policy() -> None:
    anonymous = AnonymousUser()
    hooked = {**settings.STREAM_APP, "CAN_SUBSCRIBE": f"{__name__}.allow_everything"}
    with override_settings(STREAM_APP=hooked):
        # "staff" would be allowed by the hook: the template judges by the default policy.
        assert notification_channels(anonymous) == ["notifications"]
    # What the default hook allows, for comparison.
    assert notification_channels(anonymous) == ["notifications"]


@override_settings(ROOT_URLCONF=__name__)
def test_notifications_ui_without_stream_app_urls_falls_back_to_the_default_path() -> None:
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    html = TEMPLATE.render({}, request)
    assert 'data-stream-url="/stream/"' in html
    assert 'data-read-url=""' in html
