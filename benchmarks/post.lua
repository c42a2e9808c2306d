-- wrk request for scripts/bench-baseline: POST /invoke with a JSON body.
-- The body comes from BENCH_BODY (default: the weather pipeline's parameters).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY") or '{"parameters": {"city": "Paris"}}'
