"""userapi: one scale-to-zero Knative Service per user-API endpoint."""
