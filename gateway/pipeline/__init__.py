"""From received bytes to stored children: open, extract, resolve, and the shared context."""
