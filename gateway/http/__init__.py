"""HTTP: the app and its lifespan, routes, middleware, problem+json, readiness, metrics, OpenAPI, NDJSON."""
