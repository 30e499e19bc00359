"""taskworker package."""
