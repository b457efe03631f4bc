"""The SQLite implementation of `gateway.store.api`: the only package that runs SQL."""
