"""Customers owned by the site's own model."""
