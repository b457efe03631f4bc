"""Kits for the demo and the tests: the senders and school inboxes across the gateway."""
