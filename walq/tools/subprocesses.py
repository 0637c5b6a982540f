"""Starting walq's own worker processes (the demo's, the crash bench's).

``python -m walq.tools.demo`` puts the working directory first on ``sys.path``.
Run from a source checkout after ``pip install .``, that found the checkout's
``walq/`` - which has no compiled extension - instead of the installed
package, and every worker died on import.  The workers are started so that
they import the very package their parent runs.
"""

from __future__ import annotations

import os
import sys

import walq


def module_command(module: str) -> list[str]:
    """argv running ``python -m module`` under this interpreter, importing
    this process's ``walq`` whatever the working directory holds.  Append the
    module's own arguments."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(walq.__file__)))
    code = (
        f"import sys; sys.path[0] = {root!r}; import runpy; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code]
