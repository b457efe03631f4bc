"""Where signals come in: the SMTP listener for senders and its throttles."""
