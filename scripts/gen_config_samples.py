"""Regenerate config/*.cfg sample files from config/schema.py (run after adding a key)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.loader import describe  # noqa: E402  (needs the path above)
from config.schema import AgentConfig, DashboardConfig, ServerConfig  # noqa: E402

FILES = {
    "server.cfg": ("ptap-manager", ServerConfig),
    "agentclient.cfg": ("ptap-agent", AgentConfig),
    "frontendagentclient.cfg": ("ptap-dashboard", DashboardConfig),
}


def render(who: str, cls: type) -> str:
    name = next(f for f, (w, _) in FILES.items() if w == who)
    lines = [f"# {name}: configuration of {who}.",
             "# Every key is shown with its default. Precedence: command-line flag >",
             "# environment (PTAP_<SECTION>_<KEY>, e.g. PTAP_BASIC_BIND_PORT) > this file > default.",
             "# Unknown sections or keys, and bad values, stop start-up with a message naming them."]
    current = None
    for section, key, default, doc in describe(cls):
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        if isinstance(default, bool):
            value = "yes" if default else "no"
        elif isinstance(default, tuple):
            value = ",".join(default)
        else:
            value = str(default)
        lines += [f"# {doc}", f"{key} = {value}".rstrip()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for fname, (who, cls) in FILES.items():
        (ROOT / "config" / fname).write_text(render(who, cls))
