-- json50 / json256: a small JSON POST (~60-byte body) to /json on every connection.
wrk.method = "POST"
wrk.path = "/json"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user":"bench","items":[1,2,3,4,5],"note":"sixty bytes!!"}'
