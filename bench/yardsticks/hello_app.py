"""The first yardstick: a minimal FastAPI app, served by the same uvicorn settings as userapi."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
