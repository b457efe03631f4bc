"""The durable store: the only code that runs SQL, and the receipt chain."""
