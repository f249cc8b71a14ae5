"""Values for releases on the test control plane."""

# Images Knative need not look up: it resolves every other tag to a digest at a registry, which
# nothing here can reach (Revision ContainerMissing). *.local registries are skipped by default.
OFFLINE_IMAGES = {
    "image": {"repository": "kind.local/userapi", "tag": "dev"},
    "pgbouncer": {"image": "kind.local/pgbouncer:v1.24.1-p1"},
}
