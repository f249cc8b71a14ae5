"""The HTTP layer endpoints are built on: the app factory, middleware, dependencies, the
Endpoint declaration, request bodies, error rendering and the direct GET route. Imports the
layers below it; nothing below imports it."""
