"""HTTP serving: app factory, routes, problem+json, middleware, metrics, process start.
The only package that imports fastapi, starlette and uvicorn; may import engine, store and sdk."""
