"""Regenerate config/*.cfg sample files from config/schema.py (run after adding a key)."""
import sys; sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
from config.loader import describe
from config.schema import ServerConfig, AgentConfig, DashboardConfig
heads = {
 'server.cfg': ('ptap-manager', ServerConfig),
 'agentclient.cfg': ('ptap-agent', AgentConfig),
 'frontendagentclient.cfg': ('ptap-dashboard', DashboardConfig),
}
for fname, (who, cls) in heads.items():
    lines = [f"# {fname}: configuration of {who}.",
             "# Every key is shown with its default. Precedence: command-line flag >",
             "# environment (PTAP_<SECTION>_<KEY>, e.g. PTAP_BASIC_BIND_PORT) > this file > default.",
             "# Unknown sections or keys, and bad values, stop start-up with a message naming them."]
    cur = None
    for sec, k, default, doc in describe(cls):
        if sec != cur:
            lines += ["", f"[{sec}]"]; cur = sec
        if isinstance(default, bool): v = 'yes' if default else 'no'
        elif isinstance(default, tuple): v = ','.join(default)
        else: v = str(default)
        lines.append(f"# {doc}")
        lines.append(f"{k} = {v}")
    open(f'config/{fname}', 'w').write('\n'.join(lines) + '\n')
