"""Entry points: `userapi` (cli), the dev server, the ASGI factory `uvicorn --reload` runs,
the OpenAPI renderer and `userapi cluster`. Nothing in the package imports them."""
