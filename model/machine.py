"""The machine behind a printed time: CPU model, cores, clock, last-level cache and the vector
instructions that oneDNN may use, from `lscpu` (and /proc/cpuinfo for the clock).

Virtual machines often report only "Intel(R) Xeon(R) Processor"; the family/model numbers,
clock and cache then still tell two hosts of that name apart, and the benchmarks and the
demo's summary print them beside their times. oneDNN, which runs TensorFlow's and torch's
convolutions on a CPU, picks its kernels from the CPU's flags unless ONEDNN_MAX_CPU_ISA
holds it lower (the benchmarks reproduce an AVX2-only CPU that way), so the description names
both.

Two more things make one machine's time another's: how many of its "CPUs" are cores rather
than hardware threads (the large clouds sell a vCPU as one hardware thread, so 2 vCPUs may
be one core's two threads, which compute about as much as that one core), and how much of
the time the hypervisor gave to other machines on the host while this one had work (steal,
from /proc/stat), which steal_percent measures over a run.
"""
import os
import platform
import subprocess

# The vector instruction sets that matter for oneDNN's fp32 kernels, widest first: (name,
# the lscpu flags that must all be present).
VECTOR_ISAS = (("AVX-512", ("avx512f", "avx512bw", "avx512vl")), ("AVX2", ("avx2", "fma")),
               ("AVX", ("avx",)), ("SSE4.1", ("sse4_1",)))


def lscpu_fields(text=None):
    """{field: value} of `lscpu`'s output: of its text, or of the command run now ({} without
    it), with "CPU MHz" from /proc/cpuinfo where lscpu gives no clock (virtual machines)."""
    live = text is None
    if live:
        try:
            text = subprocess.run(["lscpu"], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
    fields = {k.strip(): v.strip() for k, v in
              (line.split(":", 1) for line in text.splitlines() if ":" in line)}
    if live and not (fields.get("CPU max MHz") or fields.get("CPU MHz")):
        mhz = _cpuinfo_mhz()
        if mhz:
            fields["CPU MHz"] = mhz
    return fields


def vector_isa(flags):
    """The widest of VECTOR_ISAS that the space-separated CPU flags have, with ' + AMX' when
    the AMX tile instructions are there too; 'unknown' without flags."""
    have = set(flags.split())
    for name, needed in VECTOR_ISAS:
        if have.issuperset(needed):
            return name + (" + AMX" if "amx_tile" in have else "")
    return "unknown"


def _cpuinfo_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("cpu MHz")), None)
    except OSError:
        return None


def describe(fields=None, environ=None, usable=None):
    """A dict of what lscpu (its lscpu_fields, by default this machine's) and the environment
    say about the CPU, None where they say nothing: cpu_model; cpus (logical CPUs), cores
    (physical ones) and threads_per_core; usable, the CPUs this process may run on (its
    affinity, by default this process's: fewer than cpus under taskset or a container's
    cpuset); family_model (family/model/stepping), mhz, l3, hypervisor, isa (VECTOR_ISAS)
    and onednn_max_cpu_isa (the switch as set)."""
    f = lscpu_fields() if fields is None else fields
    environ = os.environ if environ is None else environ
    numbers = [f.get(k) for k in ("CPU family", "Model", "Stepping")]
    mhz = _float(f.get("CPU max MHz") or f.get("CPU MHz"))
    per_socket, sockets = _int(f.get("Core(s) per socket")), _int(f.get("Socket(s)"))
    return {"cpu_model": f.get("Model name") or platform.processor() or "unknown",
            "cpus": _int(f.get("CPU(s)")) or os.cpu_count(),
            "cores": per_socket * sockets if per_socket and sockets else None,
            "threads_per_core": _int(f.get("Thread(s) per core")),
            "usable": usable_cpus() if usable is None else usable,
            "family_model": "/".join(numbers) if all(numbers) else None,
            "mhz": f"{mhz:.0f}" if mhz else None,
            "l3": f.get("L3 cache"), "hypervisor": f.get("Hypervisor vendor"),
            "isa": vector_isa(f.get("Flags", "")),
            "onednn_max_cpu_isa": environ.get("ONEDNN_MAX_CPU_ISA") or None}


def describe_line(info=None):
    """One line of describe(): 'Intel(R) Xeon(R) Processor (family/model/stepping 6/167/1,
    2600 MHz, L3 480 MiB (1 instance), KVM), 2 cores, AVX-512 + AMX; ONEDNN_MAX_CPU_ISA=AVX2'."""
    d = describe() if info is None else info
    details = [f"family/model/stepping {d['family_model']}" if d["family_model"] else None,
               f"{d['mhz']} MHz" if d["mhz"] else None,
               f"L3 {d['l3']}" if d["l3"] else None, d["hypervisor"]]
    details = ", ".join(x for x in details if x)
    switch = (f"ONEDNN_MAX_CPU_ISA={d['onednn_max_cpu_isa']}" if d["onednn_max_cpu_isa"]
              else "ONEDNN_MAX_CPU_ISA unset")
    return (f"{d['cpu_model']}" + (f" ({details})" if details else "")
            + f", {_cpus_text(d)}, {d['isa']}; {switch}")


def _cpus_text(d):
    """'2 cores'; '2 CPUs = 1 core x 2 threads' where the logical CPUs are hardware threads
    of fewer cores (two such threads share one core's vector units, so they compute about
    as much as one core); '2 CPUs' where lscpu does not say; with ', 1 of them usable' where
    the process may run on fewer."""
    cpus, cores, threads = d["cpus"], d["cores"], d["threads_per_core"]
    if threads == 1:
        text = f"{cpus} cores"
    elif threads and cores:
        text = f"{cpus} CPUs = {cores} core{'s' * (cores > 1)} x {threads} threads"
    else:
        text = f"{cpus} CPUs"
    usable = d.get("usable")
    return text + (f", {usable} of them usable" if usable and cpus and usable < cpus else "")


def usable_cpus():
    """The CPUs this process may run on (os.sched_getaffinity; os.cpu_count where the
    platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_times(stat="/proc/stat"):
    """(steal, busy) clock ticks of all CPUs since boot from the first line of /proc/stat,
    or None where it cannot be read (not Linux). busy counts every tick the CPUs had work
    (user, nice, system, irq, softirq and steal), steal the ticks of it the hypervisor gave
    to other machines on the host."""
    try:
        with open(stat) as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 8:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    # already inside user and nice, idle and iowait are no work.
    user, nice, system, _, _, irq, softirq, steal = ticks[:8]
    return steal, user + nice + system + irq + softirq + steal


def steal_percent(before, after=None):
    """Of the CPU time this machine had work for between two cpu_times() readings (after:
    now), the share in percent the hypervisor gave to other machines; None without both
    readings or when there was no work."""
    after = cpu_times() if after is None else after
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def steal_text(share):
    """A steal_percent() share as printed beside a time: '0.1 %', or 'n/a' (not measured)."""
    return "n/a" if share is None else f"{share:.1f} %"


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None
