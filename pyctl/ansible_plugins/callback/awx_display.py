"""ansible-runner's event display callback, with secrets scrubbed before event data reaches disk.

ansible-runner forces the `awx_display` stdout callback; pyctl's runner puts this directory first on
ANSIBLE_CALLBACK_PLUGINS so Ansible loads this module under that name. It is the upstream callback
unchanged, except that the partial event files it writes for the runner are scrubbed of known secret
shapes first (pyctl.redact). The runner side scrubs the final events and the log as well.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ansible_runner.display_callback.callback import awx_display as _upstream

from pyctl.redact import scrub_to_json

DOCUMENTATION = _upstream.DOCUMENTATION


class _ScrubbedPartialEvents(_upstream.IsolatedFileWrite):
    """Upstream's writer (a temporary file, then an atomic rename into job_events/), with the event
    serialized once: its JSON text is searched for secret shapes and only scrubbed when one may be there."""

    def set(self, key, value):
        _, text = scrub_to_json(value, cls=_upstream.AnsibleJSONEncoderLocal)
        folder = Path(self.private_data_dir) / "job_events"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = folder / f"{key[len(':1:ev-') :]}-partial.json"
        staging = target.with_name(target.name + ".tmp")
        with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR), "w") as f:
            f.write(text)
        staging.replace(target)


if isinstance(getattr(_upstream.event_context, "cache", None), _upstream.IsolatedFileWrite):
    _upstream.event_context.cache = _ScrubbedPartialEvents()


class CallbackModule(_upstream.CallbackModule):
    CALLBACK_NAME = "awx_display"
