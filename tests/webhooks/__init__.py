"""The webhook endpoints and events."""
