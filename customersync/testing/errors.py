"""The fake's API error type and the constructors for the errors it answers.

Errors are Stripe-shaped and name the bad ``param`` as Stripe does, in bracket
syntax for nested params (``shipping[name]``, ``metadata[key]``).
"""

from __future__ import annotations

from typing import Any


class FakeStripeAPIError(Exception):
    """An API error, answered as ``{"error": {type, code, message, param}}``.

    Not the app's ``customersync.exceptions.StripeError``: that is what a client
    raises on reading such an answer; this is what the fake raises to give one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type}
        if self.code is not None:
            error["code"] = self.code
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def _invalid(message: str, param: str | None, code: str | None = None) -> FakeStripeAPIError:
    return FakeStripeAPIError(400, message, code=code, param=param)


def _unknown_param(param: str) -> FakeStripeAPIError:
    return _invalid(f"Received unknown parameter: {param}", param, "parameter_unknown")


def _missing_param(param: str, reported_as: str | None = None) -> FakeStripeAPIError:
    return _invalid(f"Missing required param: {param}.", reported_as or param, "parameter_missing")


def _cannot_unset(param: str) -> FakeStripeAPIError:
    # Stripe's answer to '' on a parameter that is not emptyable.
    return _invalid(
        f"You passed an empty string for '{param}'. We assume empty values are an "
        f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
        f"remove '{param}' from your request or supply a non-empty value.",
        param,
        "parameter_invalid_empty",
    )


def _no_such_customer(customer_id: str, param: str = "id") -> FakeStripeAPIError:
    # 404 for the customer in the path; 400 when a parameter (a list cursor) names it.
    return FakeStripeAPIError(
        404 if param == "id" else 400,
        f"No such customer: '{customer_id}'",
        code="resource_missing",
        param=param,
    )
