"""HTTP serving: app factory, routes, problem+json, middleware, metrics, process start.
The only package that imports fastapi, starlette and uvicorn; may import every layer below it
(sdk, engine, broker, store, jobs, registry), never cli (docs/architecture.md, Layers)."""
