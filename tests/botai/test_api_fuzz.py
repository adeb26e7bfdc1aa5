"""Every API operation, fed generated valid and invalid input by schemathesis from our own
OpenAPI schema, as a staff user: no 5xx, and every 4xx says what was wrong."""

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, reject, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from signals_app.models import MLConfig

api = schemathesis.from_pytest_fixture(
    "api_schema",
    data_generation_methods=[schemathesis.DataGenerationMethod.positive,
                             schemathesis.DataGenerationMethod.negative],
    # Authentication is the staff token below, not generated cookies or headers.
    generation_config=schemathesis.GenerationConfig(with_security_parameters=False),
)  # fmt: skip


@pytest.fixture
def api_schema(db):
    # As Django's test client does: a request must not close the test's connection (and with it
    # the transaction that holds the test's rows).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.from_dict(SchemaGenerator().get_schema(public=True), app=WSGIHandler())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_token(db) -> str:
    MLConfig.load()
    user = get_user_model().objects.create_user("ops", is_staff=True)
    return Token.objects.create(user=user).key


def _four_xx_says_why(response, case) -> None:
    if 400 <= response.status_code < 500:
        body = response.json
        assert body, f"{case.method} {case.formatted_path}: {response.status_code} without message"
        messages = body.values() if isinstance(body, dict) else body
        assert all(messages), f"{case.formatted_path}: an empty message in {body}"


@pytest.mark.slow
@api.parametrize()
@settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
def test_api_answers_every_input(case, staff_token):
    if case.media_type and "json" not in case.media_type and not isinstance(case.body, dict):
        reject()  # a form body that is not a mapping cannot be encoded by the WSGI transport
    response = case.call_wsgi(headers={"Authorization": f"Token {staff_token}"})
    case.validate_response(response, checks=(not_a_server_error,))
    _four_xx_says_why(response, case)
