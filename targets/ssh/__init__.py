"""Devices reached over SSH: one module per concern.

- `connection`: where to connect, whose host key to accept, one lazy connection + SFTP channel;
- `store`: the device's workdir as a content-addressed file store;
- `target`: `SSHTarget` (kind "ssh"): probe, deploy, run a job under the watchdog, collect, close;
- `resident`: a resident runner on the device (the watchdog's forwarding mode over one channel);
- `setup`: a venv with the runtimes on the device (`targets setup`);
- `trust`: fetching and recording a device's host key (`targets trust`).
"""

from __future__ import annotations

from targets.ssh.connection import LINK_TIMEOUT_S, Endpoint, fingerprint, resolve
from targets.ssh.setup import install_runtimes, packages_for, pip_download_command, platform_tags
from targets.ssh.target import GRACE_S, HEARTBEAT_S, WATCHDOG_EXIT, SSHTarget
from targets.ssh.trust import HostKey, presented_host_key, record_host_key

__all__ = ["GRACE_S", "HEARTBEAT_S", "LINK_TIMEOUT_S", "WATCHDOG_EXIT", "Endpoint", "HostKey", "SSHTarget",
           "fingerprint", "install_runtimes", "packages_for", "pip_download_command", "platform_tags",
           "presented_host_key", "record_host_key", "resolve"]
