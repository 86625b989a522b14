"""suanli.api — the HTTP edge: `create_app(settings)` in `app`, one `APIRouter` per resource in
`routes` (and `tes`, `tokens`), their shared dependencies in `deps`, the API's own bodies in
`schemas`, and error mapping. It imports nothing from `suanli.store`: data comes through
`services` (commands in `services.commands`, read models in `services.views`)."""
