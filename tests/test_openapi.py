"""The OpenAPI document (``stream_app.openapi``): valid, in step with the views, and fuzzed.

In step: every route of ``stream_app.urls`` and ``stream_app.llm.urls`` has a path and every
path resolves to one of their views; each path documents exactly the methods its view accepts
(every other method answers 405); each status and error code a view's source answers is
documented for it. Fuzzed: schemathesis generates requests from the document served by a real
uvicorn server, as an anonymous visitor, with the publish token and as a logged-in superuser
(session cookie and CSRF token, on the operations that take them), and checks that no answer
is a 5xx and that every answer conforms to the document (status, content type, headers, JSON
body, and each event of an event stream).
"""

from __future__ import annotations

import inspect
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import AsyncClient, Client, override_settings
from django.urls import URLPattern, include, path, resolve, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stream_app import requests as body_parser
from stream_app import urls as stream_urls
from stream_app.llm import urls as llm_urls
from stream_app.notifications.views import MAX_IDS
from stream_app.openapi import openapi_document
from tests.conftest import Server

# For the test that mounts stream_app.urls alone (ROOT_URLCONF=__name__).
urlpatterns = [path("events/", include("stream_app.urls"))]

METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
# Values for path arguments that start no stream: an unknown channel, an unknown generation.
SAMPLES = {"channel": "nosuch", "generation_id": "0" * 32}
PUBLISH_TOKEN = "test-token"
CSRF = "f" * 32
EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# "error(400, "code"", "_error(...)", "BodyError(415, ...)", over line breaks.
ERROR_CALL = re.compile(r"(?:error|BodyError)\(\s*(\d{3}),\s*\"(\w+)\"")
# JsonResponse({"error": "code", ...}, status=NNN), written out.
ERROR_RESPONSE = re.compile(r"JsonResponse\(\s*\{\"error\": \"(\w+)\".*?status=(\d{3})", re.DOTALL)


def routes() -> list[tuple[str, URLPattern]]:
    """(namespace, pattern) of every route the two URLconfs define."""
    found = []
    for module in (stream_urls, llm_urls):
        for pattern in module.urlpatterns:
            assert isinstance(pattern, URLPattern)
            found.append((module.app_name, pattern))
    return found


def fill(template: str) -> str:
    """A documented path with sample values for its arguments."""
    for name, value in SAMPLES.items():
        template = template.replace(f"{{{name}}}", value)
    return template


def view_of(template: str) -> Callable[..., Any]:
    """The view function behind a documented path, without its decorators."""
    return inspect.unwrap(resolve(fill(template)).func)


def error_codes(view: Callable[..., Any]) -> set[tuple[str, str]]:
    """(status, code) of every JSON error the view's source answers, its body parser's too."""
    source = inspect.getsource(view)
    found = set(ERROR_CALL.findall(source))
    found |= {(status, code) for code, status in ERROR_RESPONSE.findall(source)}
    if "read_json(" in source or "require_json(" in source:
        found |= set(ERROR_CALL.findall(inspect.getsource(body_parser)))
    return {(status, code) for status, code in found if status != "405"}


def documented_codes(operation: dict[str, Any]) -> set[tuple[str, str]]:
    """(status, code) of every JSON error the operation documents."""
    found = set()
    for status, response in operation["responses"].items():
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        for part in schema.get("allOf", []):
            for code in part.get("properties", {}).get("error", {}).get("enum", []):
                found.add((status, code))
    return found


def test_document_is_valid_openapi_31() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


def test_document_has_every_route() -> None:
    paths = openapi_document()["paths"]
    for namespace, pattern in routes():
        arguments = {name: f"{{{name}}}" for name in pattern.pattern.converters}
        url = unquote(reverse(f"{namespace}:{pattern.name}", kwargs=arguments))
        assert url in paths, f"{namespace}:{pattern.name} ({url}) is not documented"


def test_document_paths_resolve_to_the_apps_views() -> None:
    views = {pattern.callback for _, pattern in routes()}
    for template in openapi_document()["paths"]:
        assert resolve(fill(template)).func in views, template


@override_settings(ROOT_URLCONF=__name__)
def test_document_follows_where_the_urls_are_mounted() -> None:
    paths = openapi_document()["paths"]
    assert "/events/publish/" in paths
    assert "/events/{channel}/" in paths
    # stream_app.llm.urls is not mounted: no generation endpoints.
    assert not any("generation" in template for template in paths)


def test_document_codes_match_the_views() -> None:
    for template, operations in openapi_document()["paths"].items():
        view = view_of(template)
        for method, operation in operations.items():
            if method == "head":
                continue
            assert documented_codes(operation) == error_codes(view), (method, template)


def test_mark_read_limit_is_documented() -> None:
    body = openapi_document()["paths"]["/stream/notifications/read/"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["ids"]["maxItems"] == MAX_IDS


@pytest.mark.django_db
async def test_document_methods_are_the_ones_the_views_accept() -> None:
    # CSRF checks off (the test client's default): a refusal here can only be the view's 405.
    client = AsyncClient()
    for template, operations in openapi_document()["paths"].items():
        for method in METHODS:
            response = await getattr(client, method)(fill(template))
            if method in operations:
                assert response.status_code != 405, (method, template)
            else:
                assert response.status_code == 405, (method, template, response.status_code)


@pytest.mark.django_db
async def test_document_is_served() -> None:
    client = AsyncClient()
    response = await client.get(reverse("stream_app:openapi"))
    assert response.status_code == 200
    assert response.json() == openapi_document()
    refused = await client.post(reverse("stream_app:openapi"))
    assert refused.status_code == 405
    assert refused.json()["error"] == "method_not_allowed"
    # The channel called "openapi.json" is still a stream, at its slashed path.
    assert resolve("/stream/openapi.json/").url_name == "channel"


# -- schemathesis -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(uvicorn_server: Server) -> Any:
    """The document as served by the uvicorn server, loaded by schemathesis."""
    schema = schemathesis.openapi.from_url(f"{uvicorn_server.url}/stream/openapi.json")
    schema.config.update(base_url=uvicorn_server.url, request_timeout=5)
    # An event stream is read up to its first event (`ready`, or the first replayed one): it
    # never ends by itself.
    schema.config.max_stream_events = 1
    schema.config.generation.update(with_security_parameters=False)
    return schema


def fuzz(
    operation: Any,
    mode: schemathesis.GenerationMode,
    headers: dict[str, str],
    statuses: Counter[int],
    examples: int = EXAMPLES,
    **overrides: Any,
) -> None:
    """Send up to ``examples`` generated requests of ``operation``; count their statuses."""

    @given(case=operation.as_strategy(generation_mode=mode, **overrides))
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=headers, timeout=5)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except Unsatisfiable:
        # Nothing invalid to generate (a path argument: any string is one).
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise


def takes_input(operation: Any) -> bool:
    """Whether the operation has a body or a query or header parameter to make invalid."""
    raw = operation.definition.raw
    return "requestBody" in raw or any(p["in"] != "path" for p in raw.get("parameters", []))


def session_headers() -> dict[str, str]:
    """Cookies and CSRF header of a logged-in superuser (every permission)."""
    client = Client()
    client.force_login(User.objects.create_superuser("fuzzer", password="x"))
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return {
        "Cookie": f"{django_settings.SESSION_COOKIE_NAME}={session}; "
        f"{django_settings.CSRF_COOKIE_NAME}={CSRF}",
        "X-CSRFToken": CSRF,
    }


@pytest.mark.django_db(transaction=True)  # the server reads the session from the database
@pytest.mark.parametrize("identity", ["anonymous", "publish_token", "session"])
def test_fuzz_openapi(api: Any, identity: str) -> None:
    headers = {}
    operations = [result.ok() for result in api.get_all_operations()]
    # A credential changes the answers of the operations that take it, and only those.
    if identity == "publish_token":
        headers = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
        operations = [op for op in operations if "publishToken" in str(op.definition.raw)]
    elif identity == "session":
        headers = session_headers()
        operations = [op for op in operations if "csrfToken" in str(op.definition.raw)]
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    for operation in operations:
        fuzz(operation, schemathesis.GenerationMode.POSITIVE, headers, statuses)
        if takes_input(operation):
            fuzz(operation, schemathesis.GenerationMode.NEGATIVE, headers, statuses)
        if operation.path in ("/stream/", "/stream/{channel}/"):
            # Streams that start (a public channel), so that their events are checked too.
            query = {"channel": ["news"]}
            fuzz(operation, schemathesis.GenerationMode.POSITIVE, headers, statuses, 5, query=query)
    elapsed = time.monotonic() - started
    print(
        f"\nschemathesis, {identity}: {len(operations)} operations, "
        f"{sum(statuses.values())} requests in {elapsed:.1f} s, statuses {dict(statuses)}"
    )
    assert max(statuses) < 500
    if identity == "anonymous":
        # Every documented operation was fuzzed (schemathesis leaves out the document's own
        # GET), and streams started.
        assert len(operations) == sum(len(ops) for ops in openapi_document()["paths"].values()) - 1
        assert statuses[200] > 0
    elif identity == "publish_token":
        assert statuses[201] > 0  # published with the token
    else:
        # Published, marked read and cancelled (404: no such generation) as that user.
        assert statuses[201] > 0
        assert statuses[200] > 0
        assert statuses[404] > 0
