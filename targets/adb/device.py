"""What a phone is, read over `adb shell` (no Python there): getprop, cores and clusters, heat, memory, disk.

The parsing is the runner's own (`targets.runner`: getprop lines, big.LITTLE clusters), so a phone reached
over adb and one reached in Termux describe themselves alike. `phone_advice` is what `targets check` says
about a phone of either kind.
"""

from __future__ import annotations

import time
from typing import Any

from targets.adb.bridge import Adb, q
from targets.runner import android_card, big_cores, cpu_clusters, parse_getprop

# One shell round trip: sections marked "@@ name", read by `parse_probe`.
_SCRIPT = r"""echo '@@ getprop'; getprop
echo '@@ cpus'; for d in /sys/devices/system/cpu/cpu[0-9]*; do
  echo "${d##*/cpu} $(cat $d/cpufreq/cpuinfo_max_freq 2>/dev/null || echo -) \
$(cat $d/cpufreq/scaling_cur_freq 2>/dev/null || echo -) $(cat $d/cpufreq/scaling_governor 2>/dev/null || echo -)"
done
echo '@@ thermal'; for z in /sys/class/thermal/thermal_zone*; do
  echo "${z##*/} $(cat $z/temp 2>/dev/null || echo -) $(cat $z/type 2>/dev/null)"; done
echo '@@ battery'; cat /sys/class/power_supply/battery/temp 2>/dev/null
echo '@@ meminfo'; cat /proc/meminfo 2>/dev/null
echo '@@ uname'; uname -m; uname -r
echo '@@ df'; mkdir -p {workdir} 2>/dev/null; df -k {workdir} 2>/dev/null
echo '@@ end'"""


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@ "):
            current = line[3:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line.rstrip("\r"))
    return out


def parse_probe(text: str, full: bool = True) -> dict[str, Any]:
    """The probe dict (the runner's keys where they apply) from the probe script's output."""
    sec = _sections(text)
    max_khz, cur_mhz, governors = {}, {}, set()
    for line in sec.get("cpus", []):
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            if parts[1].isdigit():
                max_khz[int(parts[0])] = int(parts[1])
            if parts[2].isdigit():
                cur_mhz[f"cpu{parts[0]}"] = int(parts[2]) / 1000.0
            if parts[3] != "-":
                governors.add(parts[3])
    temps: dict[str, float] = {}
    for line in sec.get("thermal", []):
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1].lstrip("-").isdigit():
            name = parts[2] if parts[2] not in temps else f"{parts[2]}/{parts[0]}"
            temps[name] = int(parts[1]) / 1000.0
    battery = "".join(sec.get("battery", [])).strip()
    if battery.lstrip("-").isdigit():
        temps["battery"] = int(battery) / 10.0
    state: dict[str, Any] = {"governor": ",".join(sorted(governors)) or None, "cpu_freq_mhz": cur_mhz,
                             "temperature_c": temps, "throttled": None, "loadavg": None, "time": time.time()}
    if not full:
        return state
    mem = {ln.split(":")[0]: ln.split()[1] for ln in sec.get("meminfo", []) if ":" in ln and len(ln.split()) > 1}
    df = [ln.split() for ln in sec.get("df", []) if ln.split() and ln.split()[0] != "Filesystem"]
    uname = sec.get("uname", []) + ["", ""]
    card = android_card(parse_getprop("\n".join(sec.get("getprop", []))))
    clusters = cpu_clusters(max_khz)
    state.update({
        "hostname": (card or {}).get("model"), "machine": uname[0] or None,
        "os": f"Android {card.get('android')} (SDK {card.get('sdk')}), Linux {uname[1]}" if card else None,
        "cpu_model": (card or {}).get("soc"), "cores": len(sec.get("cpus", [])) or None, "affinity": None,
        "cpu_clusters": clusters, "big_cores": big_cores(clusters) if len(clusters) > 1 else None,
        "android": card, "mem_total_mb": _kb_mb(mem.get("MemTotal")),
        "mem_available_mb": _kb_mb(mem.get("MemAvailable")),
        "workdir_free_mb": int(df[-1][3]) / 1024.0 if df and len(df[-1]) > 3 and df[-1][3].isdigit() else None,
        "python": None, "python_executable": None, "runtimes": {},
    })
    return state


def probe_phone(adb: Adb, workdir: str, full: bool = True) -> dict[str, Any]:
    """Run the probe script in the phone's shell and parse it (a lost phone raises TargetError)."""
    code, out = adb.shell(_SCRIPT.replace("{workdir}", q(workdir)), timeout=60)
    probe = parse_probe(out, full=full)
    if full:
        probe["workdir"] = workdir
    return probe


def _kb_mb(v: str | None) -> float | None:
    return int(v) / 1024.0 if v and v.isdigit() else None


def phone_advice(probe: dict[str, Any], name: str) -> list[str]:
    """What `targets check` tells about a phone (either kind): which cores to pin, heat, Termux's gaps."""
    out = []
    clusters = probe.get("cpu_clusters") or []
    big = probe.get("big_cores")
    if big and len(clusters) > 1:
        layout = " + ".join(f"{len(c['cpus'])}x {c['max_mhz'] / 1000:.2f} GHz" for c in clusters)
        out.append(f"big.LITTLE ({layout}): pin to the big cores {big} with affinity = \"big\" and "
                   f"threads = {len(big)} in [targets.{name}], or timings wander between clusters")
    battery = (probe.get("temperature_c") or {}).get("battery")
    if battery is not None and battery >= 40:
        out.append(f"battery at {battery:.0f} C: the phone will throttle; let it cool, unplug fast charging")
    card = probe.get("android") or {}
    if card.get("termux_prefix") and "ai-edge-litert" not in (probe.get("runtimes") or {}):
        out.append("Termux has no LiteRT build: time .tflite models on this phone with a kind = \"adb\" target "
                   "and LiteRT's benchmark_model")
    return out


def adb_advice(probe: dict[str, Any], name: str) -> list[str]:
    """`targets check` for a kind "adb" phone: the phone advice, plus room in its workdir and heat."""
    out = phone_advice(probe, name)
    free = probe.get("workdir_free_mb")
    if free is not None and free < 200:
        out.append(f"only {free:.0f} MB free in {probe.get('workdir')} on the phone: free space or set `workdir`")
    temps = [v for k, v in (probe.get("temperature_c") or {}).items() if k != "battery"]
    if temps and max(temps) >= 70:
        out.append(f"running hot ({max(temps):.0f} C): expect thermal throttling, let the phone cool")
    if not probe.get("android"):
        out.append("adb answered but getprop gave no Android version: is this an Android device?")
    return out


def phone_lines(probe: dict[str, Any]) -> str:
    """The phone's card for the `targets check` table: model, SoC, Android and ABI, one per line ("-" if none)."""
    card = probe.get("android") or {}
    if not card:
        return "-"
    maker = card.get("manufacturer") or ""
    lines = [f"{maker} {card.get('model') or '?'}".strip(), f"SoC {card.get('soc') or '?'}",
             f"Android {card.get('android')} (SDK {card.get('sdk')}), {card.get('abi')}"]
    if card.get("termux_prefix"):
        lines.append("Termux")
    return "\n".join(lines)


def cluster_lines(probe: dict[str, Any]) -> str:
    """The big.LITTLE layout for the table: "4x 1.80 GHz: 0-3" per cluster, slowest first ("-" if unknown)."""
    rows = []
    for cl in probe.get("cpu_clusters") or []:
        cpus = cl["cpus"]
        span = f"{cpus[0]}-{cpus[-1]}" if cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 1 else \
            ",".join(map(str, cpus))
        rows.append(f"{len(cpus)}x {cl['max_mhz'] / 1000:.2f} GHz: {span}")
    return "\n".join(rows) or "-"
