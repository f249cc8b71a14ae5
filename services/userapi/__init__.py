"""userapi: one scale-to-zero Knative Service per user-API endpoint."""

__version__ = "0.1.0"
