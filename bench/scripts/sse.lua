-- sse: one streamed chat completion per request; the mock sends 50 chunks (also asked via x-mock-chunks).
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "text/event-stream"
wrk.headers["x-mock-chunks"] = "50"
wrk.body = '{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}'
