"""The HTTP side: the webhook receiver, health and metrics, and the /v1 API."""
