"""Keys and secrets: the gpg adapter, key custody, the vault for data at rest, passwords."""
