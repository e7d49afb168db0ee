"""Smoke tests against a deployed API (`make smoke API_URL=... TOKEN=...`).

A package, so its conftest does not take the module name `conftest` from tests/conftest.py.
"""
