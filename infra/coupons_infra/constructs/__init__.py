"""The constructs of the coupon service stack, each generated from coupons_infra.resources."""
