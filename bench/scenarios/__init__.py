"""One module per measurement; each `run(stack, profile, workdir)` returns a JSON-ready dict."""
