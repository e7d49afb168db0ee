"""Domain errors. Each carries the contract's error code and HTTP status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status: int = 400
    code: str = "VALIDATION_ERROR"
    message: str = "The request is not valid."

    def __init__(self, message: str | None = None, *, details: list[Any] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class ValidationFailed(DomainError):
    status, code, message = 400, "VALIDATION_ERROR", "The request is not valid."


class Unauthenticated(DomainError):
    status, code, message = 401, "UNAUTHENTICATED", "A valid bearer token is required."


class Forbidden(DomainError):
    status, code, message = 403, "FORBIDDEN", "You are not allowed to do this."


class CouponNotFound(DomainError):
    status, code, message = 404, "COUPON_NOT_FOUND", "No such coupon."


class RedemptionNotFound(DomainError):
    status, code, message = 404, "REDEMPTION_NOT_FOUND", "No such redemption."


class JobNotFound(DomainError):
    status, code, message = 404, "JOB_NOT_FOUND", "No such job."


class RouteNotFound(DomainError):
    status, code, message = 404, "NOT_FOUND", "No such route."


class CodeAlreadyExists(DomainError):
    status, code, message = 409, "CODE_ALREADY_EXISTS", "That code is already taken."


class IdempotencyConflict(DomainError):
    status, code, message = 409, "IDEMPOTENCY_CONFLICT", "This order_id was already used with a different order."


class AlreadyRolledBack(DomainError):
    status, code, message = 409, "ALREADY_ROLLED_BACK", "This order's redemption was rolled back."


class RuleViolation(DomainError):
    """The code exists but this order may not use it (422)."""

    status = 422

    def __init__(self, code: str, message: str, *, details: list[Any] | None = None) -> None:
        self.code = code
        super().__init__(message, details=details)


class RateLimited(DomainError):
    status, code, message = 429, "RATE_LIMITED", "Too many failed attempts; try again later."


class TryAgain(DomainError):
    status, code, message = 503, "TRY_AGAIN", "The store is busy; nothing was changed. Try again."


class InternalError(DomainError):
    status, code, message = 500, "INTERNAL_ERROR", "Something went wrong."


class PayloadTooLarge(DomainError):
    status, code, message = 400, "VALIDATION_ERROR", "The request body is too large."


RULE_MESSAGES: dict[str, str] = {
    "COUPON_DISABLED": "This coupon is paused.",
    "COUPON_NOT_YET_ACTIVE": "This coupon is not active yet.",
    "COUPON_EXPIRED": "This coupon has expired.",
    "COUPON_EXHAUSTED": "This coupon has been used up.",
    "USER_LIMIT_REACHED": "You have already used this coupon as often as allowed.",
    "MIN_ORDER_NOT_MET": "The order does not reach the coupon's minimum amount.",
    "NOT_APPLICABLE": "No item in the order is eligible for this coupon.",
    "CHANNEL_NOT_ALLOWED": "This coupon cannot be used on this channel.",
    "DOMAIN_NOT_ALLOWED": "This coupon is restricted to other email domains.",
    "CURRENCY_MISMATCH": "This coupon is for another currency.",
    "CUSTOMER_REQUIRED": "This coupon needs a known customer: sign the shopper in (a guest cannot use it).",
}


def rule_violation(code: str, details: list[Any] | None = None) -> RuleViolation:
    return RuleViolation(code, RULE_MESSAGES[code], details=details)


# --- issue 11 (h-input): a malformed campaign id is not found, like an unknown one -------------------


class CampaignNotFound(DomainError):
    status, code, message = 404, "CAMPAIGN_NOT_FOUND", "No such campaign."
