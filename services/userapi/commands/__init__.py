"""Entry points: `userapi` (cli), the dev server, the reloading server and its app factory,
the OpenAPI renderer and `userapi cluster`. Nothing in the package imports them."""
