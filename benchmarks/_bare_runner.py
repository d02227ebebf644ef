"""The middle arm of benchmarks/runner_overhead.py: one playbook through ansible-runner alone, no pyctl.

    python benchmarks/_bare_runner.py INVENTORY PLAYBOOK FORKS

The same ansible-runner settings as pyctl's runner (pty with a 0.5 s expect timeout, no stdout echo, no
stdout artifact, facts in memory) and an event handler that does nothing, so that the benchmark can tell
pyctl's own cost from ansible-runner's. The Ansible settings come from the environment, as for the others.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def main() -> int:
    import ansible_runner

    inventory, playbook, forks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # ansible-playbook from this interpreter's environment, as pyctl's runner finds it, activated or not
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
    with tempfile.TemporaryDirectory(prefix="pyctl-bare-runner-") as data_dir:
        result = ansible_runner.run(
            private_data_dir=data_dir,
            project_dir=str(Path(playbook).resolve().parents[1]),
            playbook=str(Path(playbook).resolve()),
            inventory=str(Path(inventory).resolve()),
            forks=forks,
            quiet=True,
            fact_cache_type="memory",
            envvars={k: v for k, v in os.environ.items() if k.startswith("ANSIBLE_")},
            settings={"pexpect_timeout": 0.5, "suppress_ansible_output": True, "suppress_output_file": True},
            event_handler=lambda _event: True,
        )
        return int(result.rc or 0)


if __name__ == "__main__":
    sys.exit(main())
