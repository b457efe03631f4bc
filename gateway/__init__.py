"""hwc-gateway: forwards Handle with Care signals from senders to schools, encrypted end to end."""

__version__ = "0.1.0"
