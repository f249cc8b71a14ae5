"""Tests against a real control plane with Knative Serving (the `cluster` marker)."""
