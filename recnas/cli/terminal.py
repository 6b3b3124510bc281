"""Text read from files (a run folder's results, a database's keys) on its way to a terminal.

Such files come from others too (a downloaded run folder): their text is shown as written,
but a control character in it is shown as an escape (`\\x1b`) and never sent to the terminal,
where it would act (clear the screen, set the title, rewrite earlier lines, forge output).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab and newline, DEL, C1


def terminal_safe(text: str) -> str:
    """`text` with every control character but tab and newline written as a `\\xNN` escape
    (a Windows line end is a line end)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text.replace("\r\n", "\n"))
