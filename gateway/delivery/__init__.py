"""From a stored child to a school: sealing a notice and handing it to a mail server."""
