"""The push: outbox, lease, confirm, and the push under failure."""
