"""suanli.api — the HTTP edge: `create_app(settings)` in `app`, schemas, and error mapping."""
