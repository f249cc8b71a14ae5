"""Clients of what lies outside the process: Auth0 (access tokens, the Management API),
Redis (the shared store), PostgreSQL (through PgBouncer) and HTTP. Import only `platform`."""
