"""Deliveries to handlers and HTTP endpoints (stand-in: only the pieces the
topics import, RetryPolicy and DeliveryTarget, until the worker lands)."""
