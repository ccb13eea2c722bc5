"""customersync: keep a Django site's customers in step with Stripe."""

__version__ = "0.1.0"
