"""Telling people: the status mail to the sender and alerts to the administrators."""
