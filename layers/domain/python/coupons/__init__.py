"""The coupon domain: models, rules and ports, shared by every function as a Lambda layer."""
