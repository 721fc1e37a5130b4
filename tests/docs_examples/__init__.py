"""The code of the documentation's how-to guides, as real files that tests run.

``docs/how-to/*.md`` include these files (``pymdownx.snippets``), so a guide shows exactly the
code its test runs against a real server.
"""
