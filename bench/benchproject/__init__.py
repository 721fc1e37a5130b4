"""The project the benchmark serves: the demo's settings and middleware, plus bench views."""
