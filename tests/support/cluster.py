"""Values for releases on the test control plane."""

from harness.cluster.chart_images import APP_IMAGE

# Images Knative need not look up: it resolves every other tag to a digest at a registry, which
# nothing here can reach (Revision ContainerMissing). *.local registries are skipped by default.
OFFLINE_IMAGES = {
    "image": {"repository": APP_IMAGE.rsplit(":", 1)[0], "tag": APP_IMAGE.rsplit(":", 1)[1]},
    "pgbouncer": {"image": "kind.local/pgbouncer:v1.24.1-p1"},
}
