"""The Stripe client, its transport and the rate budget."""
