"""`archify` end to end, exactly as the console script runs it, reporting its peak RSS.

    python -m benchmarks.cli_rss --dsn DSN status --json
"""

from __future__ import annotations

from .peak_rss import report_at_exit

if __name__ == "__main__":
    report_at_exit()
    from archify_core.cli import main

    main(prog_name="archify")
