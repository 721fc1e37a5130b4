"""``{% notifications_ui %}`` rendered from async code: the user comes from the context."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.exceptions import SynchronousOnlyOperation
from django.template import engines
from django.test import RequestFactory
from django.utils.functional import SimpleLazyObject

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
