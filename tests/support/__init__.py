"""What several test modules share: the chart renderer with test values, the overlays' builds,
Knative's schema and rules, emulator constants and token makers, the pod backends. No test
module imports another test module; they import from here (or from harness/)."""
