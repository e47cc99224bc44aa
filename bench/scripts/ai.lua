-- ai: a streamed chat completion through the AI front door: consumer auth, model routing,
-- and the Anthropic provider's stream converted to OpenAI chunks (the mock sends 50 chunks).
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "text/event-stream"
wrk.headers["Authorization"] = "Bearer sk-bench-consumer"
wrk.body = '{"model":"bench-claude","stream":true,"messages":[{"role":"user","content":"hi"}]}'
