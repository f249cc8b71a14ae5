"""Real servers on free ports for the tests, bench/ and the pod and cluster tests: started and
stopped by whoever uses them, never the machine's own services. Not part of the userapi wheel.

One module per job; import from the module (`from harness.redis_server import RedisServer`).
Importing any of them starts nothing.

    processes     the registry every server goes through: spawn/stop_process/stop_all, the
                  watchdog that cleans up after a killed caller, work directories, free_port,
                  wait_for_port/wait_for_http, finding executables, ServiceProcess (any server
                  process with its output in a file), USERAPI (this environment's console script)
    redis_server  redis-server without persistence; kill, pause (SIGSTOP) and restart
    postgres      a throwaway PostgreSQL cluster (or databases on USERAPI_TEST_POSTGRES_DSN), psql
    pgbouncer     PgBouncer in transaction mode as the chart's sidecar, its admin console
    emulator      `userapi emulator` as a process and a client for its Auth0 and control APIs
    userapi       endpoint processes (`userapi serve`), the same app in-process, `userapi migrate`
    otlp          an OTLP/HTTP receiver (the collector's part): decodes spans and metrics, and
                  serves the metrics in Prometheus' text format
    prometheus    Debian's Prometheus scraping given targets, and its query API
    podman        a private podman engine (its own configuration, storage and secrets), images
                  built as `make image` builds them, container inspection from /proc
    pods          any Kubernetes PodSpec run as a pod under `podman kube play`, with the Secrets
                  and ConfigMaps it references; what podman does unlike a kubelet is adapted

A new kind of server (a podman pod, a Kubernetes control plane) gets its own module here, built
on `processes` so that `stop_all()` and the watchdog clean it up too.
"""
