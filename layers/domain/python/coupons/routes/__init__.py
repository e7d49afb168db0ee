"""Routers: the API's routes, grouped by function; the OpenAPI document includes them all."""
