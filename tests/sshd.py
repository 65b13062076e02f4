"""A real sshd for tests: its own host key, authorized_keys and config, on loopback or in a namespace.

Nothing here touches the system's sshd or ~/.ssh: every file lives in a temporary folder.
Network namespaces (`Netns`) give a device its own address behind a veth pair, so a test can
cut the link (`ip link set DEV down`) or drop every packet (nftables) without touching loopback.
Traffic only ever goes to 127.0.0.1 or to the namespaces made here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def skip_reason() -> str | None:
    """Why the SSH tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "SSH tests need root (they log in as root and create network namespaces)"
    if not Path(SSHD).is_file():
        return "no sshd binary (apt-get install openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "no ssh-keygen (apt-get install openssh-client)"
    return None


def keygen(path: Path) -> Path:
    """An ed25519 key pair without passphrase at `path` and `path.pub`."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edge-harness-test", "-f", str(path)],
                   check=True)
    return path


def pids_matching(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment` (like `pgrep -f`, without needing procps)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if fragment.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Sshd:
    """One running sshd and the client-side files a targets file needs."""

    host: str
    port: int
    folder: Path
    client_key: Path
    proc: subprocess.Popen
    netns: str | None = None

    @property
    def host_key_pub(self) -> str:
        return (self.folder / "host_ed25519.pub").read_text().split()[1]

    def known_hosts_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} ssh-ed25519 {self.host_key_pub}\n"

    def target_toml(self, name: str, known_hosts: Path, **extra: object) -> str:
        """A `[targets.NAME]` table for this server (strings are TOML-escaped)."""
        import json

        lines = [f"[targets.{json.dumps(name)}]", 'kind = "ssh"', f"host = {json.dumps(self.host)}",
                 f"port = {self.port}", 'user = "root"', f"key = {json.dumps(str(self.client_key))}",
                 f"known_hosts = {json.dumps(str(known_hosts))}", 'ssh_config = ""']
        for k, v in extra.items():
            lines.append(f"{k} = {json.dumps(v)}")
        return "\n".join(lines) + "\n"

    def log(self) -> str:
        p = self.folder / "sshd.log"
        return p.read_text() if p.is_file() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(folder: Path, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None,
               client_key: Path | None = None) -> Sshd:
    """Start `sshd -D -e` on host:port (inside `netns` if given) that lets root in with `client_key`."""
    folder.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    host_key = folder / "host_ed25519"
    if not host_key.is_file():
        keygen(host_key)
    if client_key is None:
        client_key = folder / "client_ed25519"
        if not client_key.is_file():
            keygen(client_key)
    (folder / "authorized_keys").write_text(Path(str(client_key) + ".pub").read_text())
    port = port or (2222 if netns else free_port())
    conf = folder / "sshd_config"
    conf.write_text("\n".join([
        f"Port {port}", f"ListenAddress {host}", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no",  # keys under /tmp fail the ownership checks
        "Subsystem sftp internal-sftp", "MaxStartups 64", "MaxSessions 64", "LogLevel INFO", "",
    ]))
    cmd = [SSHD, "-D", "-e", "-f", str(conf)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    log = open(folder / "sshd.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    server = Sshd(host=host, port=port, folder=folder, client_key=client_key, proc=proc, netns=netns)
    try:
        wait_port(host, port)
    except OSError:
        server.stop()
        raise RuntimeError(f"sshd did not start: {server.log()[-500:]}") from None
    return server


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class Netns:
    """A network namespace behind a veth pair: the host side is 10.203.N.1/30, the device .2."""

    name: str
    subnet: int
    veth_host: str = ""
    veth_dev: str = ""
    servers: list[Sshd] = field(default_factory=list)

    @property
    def host_addr(self) -> str:
        return f"10.203.{self.subnet}.1"

    @property
    def addr(self) -> str:
        return f"10.203.{self.subnet}.2"

    @classmethod
    def create(cls, tag: str) -> Netns:
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        base = os.getpid() % 200
        subnet = next(n for n in [(base + i) % 250 + 1 for i in range(250)] if f"10.203.{n}." not in used)
        short = f"{os.getpid() % 100000}{tag}"[:11]
        ns = cls(name=f"eh-{short}", subnet=subnet, veth_host=f"eh{short}h", veth_dev=f"eh{short}d")
        _run("ip", "netns", "add", ns.name)
        try:
            _run("ip", "link", "add", ns.veth_host, "type", "veth", "peer", "name", ns.veth_dev)
            _run("ip", "link", "set", ns.veth_dev, "netns", ns.name)
            _run("ip", "addr", "add", f"{ns.host_addr}/30", "dev", ns.veth_host)
            _run("ip", "link", "set", ns.veth_host, "up")
            ns.exec("ip", "addr", "add", f"{ns.addr}/30", "dev", ns.veth_dev)
            ns.exec("ip", "link", "set", ns.veth_dev, "up")
            ns.exec("ip", "link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            ns.delete()
            raise
        return ns

    def exec(self, *cmd: str) -> None:
        _run("ip", "netns", "exec", self.name, *cmd)

    def start_sshd(self, folder: Path, client_key: Path | None = None) -> Sshd:
        server = start_sshd(folder, host=self.addr, netns=self.name, client_key=client_key)
        self.servers.append(server)
        return server

    def cut(self) -> None:
        """Pull the cable: the device's side of the link goes down."""
        self.exec("ip", "link", "set", self.veth_dev, "down")

    def blackhole(self) -> None:
        """Drop every packet that reaches the device (no reply, no reset: like a dead host)."""
        subprocess.run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], check=True, capture_output=True,
                       text=True, input="table inet ehdrop {\n chain input {\n"
                                        "  type filter hook input priority 0; policy drop;\n }\n}\n")

    def delete(self) -> None:
        for s in self.servers:
            s.stop()
        # sshd sessions whose link was cut outlive the listener (TCP retries for minutes): end them too.
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (OSError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth_host], capture_output=True)
