"""Several Stripe accounts, test and live mode."""
