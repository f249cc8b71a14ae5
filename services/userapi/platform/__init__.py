"""The floor every other layer stands on: settings, errors, per-request context, logs,
telemetry and process startup. Imports nothing else of userapi."""
