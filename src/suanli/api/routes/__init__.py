"""The HTTP routes, one `APIRouter` module per resource: `tasks`, `sites` (sites and pools),
`agents` (the agent protocol), `market` (quotes, orders, ratings, balance, statement) and `ops`
(healthz, metrics). Each handler is a module-level function that takes the app's `Platform`
through `deps.PlatformDep`, so it can be imported and tested on an app of its own."""
