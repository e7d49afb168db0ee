"""API Gateway TOKEN authorizer: Cognito ID tokens (people) and access tokens (servers). Wiring only."""

from typing import Any

from coupons.authorizer import handler

lambda_handler: Any = handler
