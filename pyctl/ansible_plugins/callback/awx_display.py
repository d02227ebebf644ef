"""ansible-runner's event display callback, with secrets scrubbed before event data reaches disk.

ansible-runner forces the `awx_display` stdout callback; pyctl's runner puts this directory first on
ANSIBLE_CALLBACK_PLUGINS so Ansible loads this module under that name. It is the upstream callback
unchanged, except that the partial event files it writes for the runner are scrubbed of known secret
shapes first (pyctl.redact). The runner side scrubs the final events and the log as well.
"""

from __future__ import annotations

from ansible_runner.display_callback.callback import awx_display as _upstream

from pyctl.redact import scrub

DOCUMENTATION = _upstream.DOCUMENTATION


class _ScrubbedPartialEvents(_upstream.IsolatedFileWrite):
    def set(self, key, value):
        super().set(key, scrub(value))


if isinstance(getattr(_upstream.event_context, "cache", None), _upstream.IsolatedFileWrite):
    _upstream.event_context.cache = _ScrubbedPartialEvents()


class CallbackModule(_upstream.CallbackModule):
    CALLBACK_NAME = "awx_display"
