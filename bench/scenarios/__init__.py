"""One module per measurement of issue #5; each `run` returns a JSON-ready dict."""
