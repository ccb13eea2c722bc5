"""The fake Stripe server (``customersync.testing``) and the fixture sites use."""
