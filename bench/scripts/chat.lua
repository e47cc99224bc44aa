-- Every bench request: a POST whose path, body and headers come from the environment, set by
-- bench/wrk.py from bench/bodies.py, so wrk sends exactly what the Python checks sent before it
-- (the OpenAI SDK's chat.completions.create request). By hand: eval "$(python bench/bodies.py json)".
-- With no request() function, wrk builds the request once per thread: no Lua per request.
wrk.method = "POST"
wrk.path = assert(os.getenv("BENCH_PATH"), "BENCH_PATH is not set")
wrk.body = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+): ([^\n]*)") do
    wrk.headers[name] = value
end
